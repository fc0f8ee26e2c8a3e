"""A bounded map from a token to what its verification found, whose entries die at a deadline.

A resource server sees the same token many times while it lives (a workload
reuses it for minutes), so the second look is a dictionary lookup instead of a
signature check. Only tokens that passed every check are stored, under their
full text (a signature alone would let a forged payload hit the cache).

Lookups take no lock (a dict read is atomic); inserts and removals take one.
Entries are kept in insertion order, which for tokens of similar lifetimes is
close to expiry order, so a few dead entries are dropped from the front on each
insert and the oldest goes first when the map is full: memory stays bounded by
``max_entries`` and no sweep is ever a full scan. The map is an ``OrderedDict``:
removing from the front of a plain dict leaves holes that every later
``next(iter(d))`` walks over (measured: 17 us per insert once full, against
under 1 us).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_SWEEP_PER_INSERT = 4


class VerifiedCache(Generic[T]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        """The value stored for ``key`` if its deadline is still ahead, else None."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        return None

    def put(self, key: str, value: T, deadline: float, admit: Callable[[], bool] | None = None) -> bool:
        """Store ``value`` until ``deadline`` (clock seconds); ``admit`` is asked under the lock, last.

        Returns whether it was stored (not when the cache is disabled, the deadline
        has passed, or ``admit`` said no).
        """
        if self._max == 0:
            return False
        with self._lock:
            now = self._clock()
            if deadline <= now or (admit is not None and not admit()):
                return False
            self._sweep(now)
            while len(self._entries) >= self._max:
                self._entries.popitem(last=False)
            self._entries.pop(key, None)  # re-inserted at the back
            self._entries[key] = (deadline, value)
            return True

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_PER_INSERT):
            if not self._entries:
                return
            first = next(iter(self._entries))
            if self._entries[first][0] > now:
                return
            self._entries.popitem(last=False)

    def discard_if(self, predicate: Callable[[T], bool]) -> int:
        """Remove every entry whose value matches (a revocation); returns how many went."""
        with self._lock:
            doomed = [k for k, (_, v) in self._entries.items() if predicate(v)]
            for key in doomed:
                del self._entries[key]
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

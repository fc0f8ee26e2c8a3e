"""Failed-authentication throttling: a fixed-size, clock-injected failure counter per key.

Each key (a client id or a client IP) may fail ``limit`` times within
``window`` seconds; after that it is locked out until the window that began
with its first counted failure ends. Successful requests are never counted, so
a well-behaved workload pays only a dictionary lookup. Memory is bounded:
when ``max_keys`` is reached the oldest entries are dropped, which can only
make the throttle more lenient, never lock out an innocent key.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    window_start: float
    failures: int


class FailureThrottle:
    """Counts failures per key; ``retry_after`` says how long a key must wait, or None."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("throttle limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def retry_after(self, key: str, now: float) -> int | None:
        """Whole seconds until ``key`` may try again, or None if it is not locked out."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        remaining = entry.window_start + self.window - now
        if remaining <= 0:
            del self._entries[key]
            return None
        if entry.failures < self.limit:
            return None
        return max(1, math.ceil(remaining))

    def record_failure(self, key: str, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.window_start + self.window <= now:
            self._entries[key] = _Entry(now, 1)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        else:
            entry.failures += 1

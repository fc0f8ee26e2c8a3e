"""Per-object delayed re-reconciliation: the operator's own work queue, where every failure gets a fate.

kopf's event handlers are not retried and its timers need a finalizer on
every object, so credward keeps one pending wake-up per key in memory. Losing
it on restart is harmless: the restart lists every object again.

A wake-up runs the action in a task that nobody awaits, so the task itself
guarantees the next one: whatever the action raises is logged, counted and
retried with capped exponential backoff (``backoff`` is the same schedule the
controller uses for failures it expects).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class Requeue:
    def __init__(
        self,
        action: Callable[[Key], Coroutine[Any, Any, None]],
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        on_unexpected: Callable[[Key, BaseException], None] | None = None,
        max_running: int = 64,
    ) -> None:
        self._action = action
        # At most this many actions at once; the others wait their turn, each key once (a burst of a
        # thousand wake-ups does not hold a thousand half-done reconciles, their bodies and requests, in memory).
        self._slots = asyncio.Semaphore(max(max_running, 1))
        self._waiting: set[Key] = set()
        self._open: asyncio.Event | None = None  # when set: no action starts before it is (see hold_until)
        self._base = backoff_base
        self._max = backoff_max
        self._on_unexpected = on_unexpected
        self._pending: dict[Key, asyncio.TimerHandle] = {}
        self._due: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, key: Key, delay: float) -> None:
        """Run the action for ``key`` in ``delay`` seconds, replacing any earlier wake-up."""
        self._cancel(key)
        loop = asyncio.get_running_loop()
        delay = max(delay, 0.0)
        self._pending[key] = loop.call_later(delay, self._fire, key)
        self._due[key] = loop.time() + delay

    def sooner(self, key: Key, delay: float) -> None:
        """Like :meth:`after`, but never postpones a wake-up that is already due earlier."""
        due = self._due.get(key)
        if due is None or due > asyncio.get_running_loop().time() + delay:
            self.after(key, delay)

    def backoff(self, key: Key) -> float:
        """The next delay after a failure of ``key``: 1 s, 2 s, 4 s, … up to the cap."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self._base * 2 ** min(failures, 30), self._max))

    def succeeded(self, key: Key) -> None:
        """Reset the backoff of ``key``."""
        self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        return self._failures.get(key, 0)

    def pending(self) -> tuple[Key, ...]:
        return tuple(self._pending)

    def forget(self, key: Key) -> None:
        self._cancel(key)
        self._failures.pop(key, None)

    def _cancel(self, key: Key) -> None:
        handle = self._pending.pop(key, None)
        self._due.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: Key) -> None:
        self._pending.pop(key, None)
        self._due.pop(key, None)
        if key in self._waiting:
            return  # already waiting for a slot: it reads everything afresh when it runs
        self._waiting.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def waiting(self) -> int:
        """Wake-ups due but waiting for a slot (the queue depth)."""
        return len(self._waiting)

    def hold_until(self, ready: asyncio.Event) -> None:
        """Start no action before ``ready`` is set (wake-ups still queue, each key once)."""
        self._open = ready

    async def _run(self, key: Key) -> None:
        try:
            if self._open is not None and not self._open.is_set():
                await self._open.wait()
            async with self._slots:
                self._waiting.discard(key)
                await self._action(key)
        except asyncio.CancelledError:
            self._waiting.discard(key)
            raise
        except Exception as exc:
            delay = self.backoff(key)
            log.error("%s/%s: unexpected %s; retrying in %.0fs", *key, type(exc).__name__, delay, exc_info=exc)
            if self._on_unexpected is not None:
                self._on_unexpected(key, exc)
            self.sooner(key, delay)

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        self._due.clear()
        for task in self._tasks:
            task.cancel()

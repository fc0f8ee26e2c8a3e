"""Per-object delayed re-reconciliation: the operator's own work queue.

kopf's event handlers are not retried and its timers need a finalizer on
every object, so credward keeps one pending wake-up per credential in memory.
Losing it on restart is harmless: the restart lists every object again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


class Requeue:
    def __init__(self, action: Callable[[Key], Coroutine[Any, Any, None]]) -> None:
        self._action = action
        self._pending: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, key: Key, delay: float) -> None:
        """Run the action for ``key`` in ``delay`` seconds, replacing any earlier wake-up."""
        self.forget(key)
        loop = asyncio.get_running_loop()
        self._pending[key] = loop.call_later(max(delay, 0.0), self._fire, key)

    def forget(self, key: Key) -> None:
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, key: Key) -> None:
        self._pending.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._action(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for task in self._tasks:
            task.cancel()

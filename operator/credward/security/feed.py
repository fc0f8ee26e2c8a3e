"""The revocation feed: long-poll and server-sent events over the store's revocation log.

Validators call ``GET /v1/revocations?since=<cursor>`` and keep the returned
cursor. Revocations made through this replica wake waiters at once; those made
through another replica (PostgreSQL) are found by polling the store every
``poll_interval`` seconds, so the feed lags by at most that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from credward.security.model import RevocationEvent
from credward.security.store.base import Store


def event_json(event: RevocationEvent) -> dict[str, object]:
    return {
        "cursor": event.cursor,
        "kind": event.kind.value,
        "subject": event.subject,
        "client_id": event.client_id,
        "revoked_at": event.revoked_at.isoformat(),
        "expires_at": event.expires_at.isoformat() if event.expires_at else None,
    }


class RevocationFeed:
    def __init__(self, store: Store, poll_interval: float = 1.0) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._changed = asyncio.Event()

    def notify(self, cursor: int) -> None:
        """Wake every waiter (called after a local revocation)."""
        del cursor
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_since(self, cursor: int, wait: float, limit: int = 500) -> list[RevocationEvent]:
        """Events after ``cursor``; if none, wait up to ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            changed = self._changed
            events = await self._store.revocations_since(cursor, limit)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, self._poll_interval))

"""The revocation feed: long-poll and server-sent events over the store's revocation log, for many subscribers.

Validators call ``GET /v1/revocations?since=<cursor>`` (long-poll) or ask for ``text/event-stream`` and keep
the last cursor. One reader per replica follows the store, so thousands of subscribers cost one store query
per change, not one each:

* a local revocation wakes the reader at once (:meth:`RevocationFeed.notify`); revocations made through
  another replica (PostgreSQL) are found by polling the store every ``poll_interval`` seconds;
* the reader keeps the most recent events in memory, each encoded once as a server-sent event, and hands the
  same bytes to every subscriber; a subscriber that is further behind than memory reaches reads the store;
* each stream subscriber has a queue of at most ``buffer`` batches (what one read of the store found; the
  batch is one list shared by all subscribers, so a queued batch costs a subscriber one slot, not a copy).
  A subscriber that does not keep up (its client reads slowly, or not at all) is **dropped** when its
  queue is full: its stream ends, nothing more is buffered for it, and its client reconnects with its last
  cursor (``Last-Event-ID``) and catches up.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from credward.security.metrics import Metrics
from credward.security.model import RevocationEvent
from credward.security.store.base import Store

log = logging.getLogger(__name__)

PAGE = 500
RECENT_EVENTS = 4096


def event_json(event: RevocationEvent) -> dict[str, object]:
    return {
        "cursor": event.cursor,
        "kind": event.kind.value,
        "subject": event.subject,
        "client_id": event.client_id,
        "revoked_at": event.revoked_at.isoformat(),
        "expires_at": event.expires_at.isoformat() if event.expires_at else None,
    }


def sse_bytes(event: RevocationEvent) -> bytes:
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event.cursor}\nevent: revocation\ndata: {data}\n\n".encode()


Events = list[tuple[RevocationEvent, bytes]]
CATCH_UP_CHUNK = 32  # events per write when a stream catches up (a chunk is its own copy; keep it small)


class Batch:
    """What one read of the store found, encoded once: every stream writes the same ``data`` object."""

    __slots__ = ("data", "events", "first", "last")

    def __init__(self, events: Events) -> None:
        self.events = events
        self.data = b"".join(data for _, data in events)
        self.first = events[0][0].cursor if events else 0
        self.last = events[-1][0].cursor if events else 0


KEEPALIVE = Batch([])  # sent to every stream now and then, so idle connections show they are alive


class Subscription:
    """One stream subscriber: a bounded queue of shared batches, and whether it was dropped."""

    __slots__ = ("dropped", "queue")

    def __init__(self, buffer: int) -> None:
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(buffer)
        self.dropped = False


class RevocationFeed:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        poll_interval: float = 1.0,
        keepalive: float = 30.0,
        buffer: int = 64,
        recent: int = RECENT_EVENTS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._poll_interval = poll_interval
        self._keepalive = keepalive
        self._buffer = buffer
        self._recent_max = recent
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._subscribers: set[Subscription] = set()
        # Every event with floor < cursor <= latest is in memory, in cursor order.
        self._cursors: list[int] = []
        self._events: Events = []
        self._floor = self._latest = 0
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def start(self) -> None:
        """Begin following the store from its newest entry (idempotent; the app's lifespan calls it)."""
        if self._task is not None:
            return
        async with self._start_lock:
            if self._task is None:
                self._floor = self._latest = await self._store.latest_cursor()
                self._task = asyncio.create_task(self._follow(), name="credward-revocation-feed")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subscribers:
            sub.dropped = True  # their streams end; shutting down is not counted as dropping
        self._subscribers.clear()

    def notify(self, cursor: int) -> None:
        """A revocation was written through this replica: look at the store now."""
        del cursor
        self._wake.set()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + self._keepalive
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._read_new()
            except Exception:
                log.exception("revocation feed: reading the store failed; retrying")
            if loop.time() >= next_keepalive:  # one timer for all streams, not one per stream
                next_keepalive = loop.time() + self._keepalive
                self._publish(KEEPALIVE)

    async def _read_new(self) -> None:
        while True:
            events = await self._store.revocations_since(self._latest, PAGE)
            if events:
                self._add(Batch([(event, sse_bytes(event)) for event in events]))
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()  # long-polls wake and find the new events in memory
            if len(events) < PAGE:
                return

    def _add(self, batch: Batch) -> None:
        self._cursors.extend(event.cursor for event, _ in batch.events)
        self._events.extend(batch.events)
        self._latest = batch.last
        if len(self._cursors) > 2 * self._recent_max:  # trim in halves: amortized O(1) per event
            cut = len(self._cursors) - self._recent_max
            self._floor = self._cursors[cut - 1]
            del self._cursors[:cut], self._events[:cut]
        self._publish(batch)

    def _publish(self, batch: Batch) -> None:
        dropped = []
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(batch)
            except asyncio.QueueFull:
                dropped.append(sub)
        for sub in dropped:
            self._drop(sub)

    def _drop(self, sub: Subscription) -> None:
        sub.dropped = True
        self._subscribers.discard(sub)
        self._metrics.feed_dropped.inc()
        self._metrics.feed_subscribers.set(len(self._subscribers))

    async def _since(self, cursor: int, limit: int) -> Events:
        """Events after ``cursor``: from memory when it reaches back that far, else from the store."""
        if cursor >= self._floor:
            start = bisect.bisect_right(self._cursors, cursor)
            return self._events[start : start + limit]
        return [(e, sse_bytes(e)) for e in await self._store.revocations_since(cursor, limit)]

    async def resume_point(self, cursor: int) -> int:
        """Where a reader holding ``cursor`` resumes: ``cursor`` itself, or 0 if the store never reached it.

        A cursor beyond the newest entry comes from another store (wiped or
        replaced: cursors start again at 1), so the reader gets every entry of
        this one instead of waiting, silently, until the new store passes its
        old cursor. The store is asked before deciding, since this replica's
        view may trail another replica's by a poll interval.
        """
        await self.start()
        if cursor <= self._latest or cursor <= await self._store.latest_cursor():
            return cursor
        return 0

    async def wait_since(self, cursor: int, wait: float, limit: int = PAGE) -> list[RevocationEvent]:
        """Events after ``cursor``; if there are none yet, wait up to ``wait`` seconds for one."""
        await self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while cursor >= self._latest:
                    await self._changed.wait()
        return [e for e, _ in await self._since(cursor, limit)]

    async def stream(self, cursor: int) -> AsyncIterator[bytes]:
        """Server-sent events after ``cursor``, then each new one as it comes, until this subscriber is dropped."""
        await self.start()
        sub = Subscription(self._buffer)
        self._subscribers.add(sub)  # before catching up, so nothing written meanwhile is missed
        self._metrics.feed_subscribers.set(len(self._subscribers))
        try:
            yield b": credward revocation feed\n\n"
            while missed := await self._since(cursor, CATCH_UP_CHUNK):
                yield b"".join(data for _, data in missed)
                cursor = missed[-1][0].cursor
            while not sub.dropped:
                batch = await sub.queue.get()
                if batch is KEEPALIVE:
                    yield b": keep-alive\n\n"
                elif batch.first > cursor:  # the usual case: all new, write the shared bytes
                    cursor = batch.last
                    yield batch.data
                elif batch.last > cursor:  # overlaps what catching up already wrote
                    fresh = [data for event, data in batch.events if event.cursor > cursor]
                    cursor = batch.last
                    yield b"".join(fresh)
        finally:
            if sub in self._subscribers:
                self._subscribers.discard(sub)
                self._metrics.feed_subscribers.set(len(self._subscribers))

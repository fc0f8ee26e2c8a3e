"""The revocation feed's reader and its subscribers, on a real SQLite store: catch-up, fan-out, dropping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from credward.security.feed import RevocationFeed
from credward.security.metrics import Metrics
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def next_chunk(stream: AsyncIterator[bytes]) -> bytes:
    return await anext(stream)


async def revoke(store: SQLiteStore, feed: RevocationFeed, n: int) -> int:
    event = await store.revoke_token(f"jti-{n}", "c", NOW + timedelta(minutes=5), NOW)
    feed.notify(event.cursor)
    return event.cursor


async def test_long_poll_wakes_on_a_local_revocation_and_reads_memory(store: SQLiteStore) -> None:
    feed = RevocationFeed(store, Metrics(), poll_interval=60)
    try:
        await feed.start()
        waiting = asyncio.create_task(feed.wait_since(0, 30))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        cursor = await revoke(store, feed, 1)
        async with asyncio.timeout(5):  # the poll interval is a minute: only notify can have woken it
            events = await waiting
        assert [e.cursor for e in events] == [cursor]
        assert await feed.wait_since(cursor, 0) == []
    finally:
        await feed.close()


async def test_a_subscriber_far_behind_memory_is_served_from_the_store(store: SQLiteStore) -> None:
    feed = RevocationFeed(store, Metrics(), poll_interval=60, recent=2)
    try:
        await feed.start()
        cursors = [await revoke(store, feed, n) for n in range(6)]
        while await feed.wait_since(cursors[-2], 5) == []:
            pass
        assert feed._floor > 0  # the oldest events are no longer in memory
        behind = await feed.wait_since(0, 0)
        assert [e.cursor for e in behind] == cursors
    finally:
        await feed.close()


async def test_streams_catch_up_then_follow_and_the_one_that_stops_reading_is_dropped(store: SQLiteStore) -> None:
    metrics = Metrics()
    feed = RevocationFeed(store, metrics, poll_interval=60, buffer=2)
    try:
        await feed.start()
        first = await revoke(store, feed, 0)
        reading, silent = feed.stream(0), feed.stream(0)
        assert await anext(reading) == b": credward revocation feed\n\n"
        assert await anext(silent) == b": credward revocation feed\n\n"
        assert f"id: {first}\n".encode() in await anext(reading)  # catch-up from memory
        assert f"id: {first}\n".encode() in await anext(silent)
        pending = asyncio.create_task(next_chunk(reading))  # the reader now waits on its queue
        await asyncio.sleep(0)
        assert feed.subscribers == 2
        for n in range(1, 5):  # one store read per revocation: one batch each
            cursor = await revoke(store, feed, n)
            async with asyncio.timeout(5):
                data = await pending
            assert f"id: {cursor}\n".encode() in data
            pending = asyncio.create_task(next_chunk(reading))
            await asyncio.sleep(0)
        assert feed.subscribers == 1  # the silent one took nothing from its queue of 2: dropped
        assert metrics.feed_dropped._value.get() == 1
        async with asyncio.timeout(5):
            rest = [chunk async for chunk in silent]  # what it had queued, then its stream ends
        assert len(rest) <= 2
        pending.cancel()
    finally:
        await feed.close()

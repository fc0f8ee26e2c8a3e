"""What each backend promises beyond the shared contract: SQLite's file and WAL mode, PostgreSQL's reconnects."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import asyncpg
import pytest
from tests.integration.conftest import sqlite_url
from tests.support.postgres import PostgresServer

from credward.security.model import Account
from credward.security.store import open_store
from credward.security.store.postgres import PostgresStore
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.integration


async def test_sqlite_creates_its_directory_and_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "store.db"
    store = open_store(sqlite_url(path))
    assert isinstance(store, SQLiteStore)
    try:
        await store.migrate()
        await store.put_account(Account(client_id="c", identity="c@clients.test"))
    finally:
        await store.close()
    assert path.is_file()
    async with aiosqlite.connect(path) as conn, conn.execute("PRAGMA journal_mode") as cur:
        assert await cur.fetchone() == ("wal",)


async def test_a_new_sqlite_file_is_a_new_store_with_a_new_id(tmp_path: Path) -> None:
    """A wiped SQLite file (a pod without a persistent volume, restarted) is told apart by its id."""
    path = tmp_path / "store.db"
    ids = []
    for _ in range(2):
        store = open_store(sqlite_url(path))
        try:
            await store.migrate()
            ids.append((await store.info()).store_id)
        finally:
            await store.close()
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    store = open_store(sqlite_url(path))
    try:
        await store.migrate()
        ids.append((await store.info()).store_id)
    finally:
        await store.close()
    assert ids[0] == ids[1] != ids[2]


async def test_postgres_store_survives_the_server_dropping_its_connections(postgres_server: PostgresServer) -> None:
    """A failover or an administrator's pg_terminate_backend must not leave the pool holding dead connections."""
    dsn = postgres_server.create_database("drop")
    store = open_store(dsn)
    assert isinstance(store, PostgresStore)
    try:
        await store.migrate()
        await store.put_account(Account(client_id="c", identity="c@clients.test"))
        admin = await asyncpg.connect(postgres_server.dsn())
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
                dsn.rsplit("/", 1)[1],
            )
        finally:
            await admin.close()
        assert killed >= 1
        got = await store.get_account("c")
        assert got is not None
        assert got.client_id == "c"
        await store.ping()
    finally:
        await store.close()

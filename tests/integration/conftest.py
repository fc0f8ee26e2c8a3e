"""Integration fixtures for storage: a real PostgreSQL server per session, and a fresh store per test.

Parametrize a test over both backends by asking for ``store`` (an open, migrated
store) or ``store_url`` (a fresh, empty database's URL, e.g. to start the
service with); PostgreSQL is started only when a test needs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.support.postgres import PostgresServer

from credward.security.store import Store, open_store

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL (the distribution's server binaries) on a free loopback port, for the whole session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of one database created for the session."""
    return postgres_server.create_database("session")


def sqlite_url(path: Path) -> str:
    """``sqlite:///`` + an absolute path gives the four-slash absolute form."""
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL, once per backend: a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database("t")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open, migrated store on a fresh database, closed after the test."""
    opened = open_store(store_url)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()

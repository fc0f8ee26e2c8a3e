"""Storage behind one small interface: SQLite (default, one file) or PostgreSQL (several replicas).

``open_store(url)`` picks the backend from the URL and connects lazily on first
use; call ``await store.migrate()`` at startup and ``await store.close()`` at exit.
"""

from __future__ import annotations

from credward.security.store.base import Store
from credward.security.store.codec import parse_store_url

__all__ = ["Store", "open_store"]


def open_store(url: str) -> Store:
    """A store for ``sqlite:///path.db`` (relative; ``sqlite:////abs/path.db`` absolute) or ``postgresql://...``.

    Raises ValueError for a URL it cannot use, so a wrong setting fails at startup.
    """
    parsed = parse_store_url(url)
    if parsed.backend == "sqlite":
        from credward.security.store.sqlite import SQLiteStore

        return SQLiteStore(parsed.target)
    from credward.security.store.postgres import PostgresStore

    return PostgresStore(parsed.target)

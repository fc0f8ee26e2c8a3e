"""Storage behind one small interface: SQLite (default, one file) or PostgreSQL (several replicas)."""

from credward.security.store.base import Store

__all__ = ["Store"]

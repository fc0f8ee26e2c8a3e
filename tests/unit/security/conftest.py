"""Fixtures for the security service's unit tests (defined in security_fakes, a uniquely named module)."""

from security_fakes import add_client, app, clock, memory_store, settings

__all__ = ["add_client", "app", "clock", "memory_store", "settings"]

"""Fixtures for the security service's unit tests (defined in security_fakes, a uniquely named module)."""

from tests.unit.security.security_fakes import add_client, app, clock, memory_store, settings

__all__ = ["add_client", "app", "clock", "memory_store", "settings"]

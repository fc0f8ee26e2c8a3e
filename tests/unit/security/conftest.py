"""Fixtures for the security service's unit tests (defined in security_fixtures, a uniquely named module)."""

from tests.unit.security.security_fixtures import add_client, app, clock, http, services, settings, store

__all__ = ["add_client", "app", "clock", "http", "services", "settings", "store"]

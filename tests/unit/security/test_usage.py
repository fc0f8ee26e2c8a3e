"""Secret usage: recorded per token request in memory, flushed in batches, shown on the admin API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.unit.security.security_fixtures import ADMIN, HASH_KEY, ISSUER, Client, FakeClock, make_settings, running

from credward.api.admin import AccountView
from credward.security.adminauth import BearerFileAuthenticator
from credward.security.app import CredwardApp, create_app
from credward.security.metrics import Metrics
from credward.security.model import SecretUsage
from credward.security.openapi import openapi_document
from credward.security.store.sqlite import SQLiteStore
from credward.security.usage import OVERFLOW, Pending, UsageTracker, merge

pytestmark = pytest.mark.unit

AddClient = Callable[..., Awaitable[Client]]


async def token(http: httpx.AsyncClient, client: Client) -> httpx.Response:
    return await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, client.secret)
    )


async def view(http: httpx.AsyncClient, client_id: str) -> AccountView:
    answer = await http.get(f"/v1/admin/accounts/{client_id}", headers=ADMIN)
    assert answer.status_code == 200
    return AccountView.model_validate_json(answer.content)


def at(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


async def test_token_requests_are_recorded_in_memory_and_written_only_by_a_flush(
    http: httpx.AsyncClient, app: CredwardApp, add_client: AddClient, store: SQLiteStore, clock: FakeClock
) -> None:
    client = await add_client()
    for _ in range(5):
        assert (await token(http, client)).status_code == 200
    # Nothing was written per request ...
    assert await store.secret_usage(client.client_id, at(clock)) == {}
    # ... yet the admin view of this replica already shows the use.
    (secret,) = (await view(http, client.client_id)).secrets
    assert (secret.id, secret.last_used_at, secret.distinct_callers) == ("s1", at(clock), 1)
    tracker = app.services.oauth.usage
    assert await tracker.flush() == 1  # one (secret, caller) row for five requests
    assert await store.secret_usage(client.client_id, at(clock)) == {"s1": SecretUsage(at(clock), 1)}
    assert await tracker.flush() == 0


async def test_a_refused_secret_is_not_recorded(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client()
    wrong = Client(client.client_id, client.secret[:-1] + ("A" if client.secret[-1] != "A" else "B"))
    assert (await token(http, wrong)).status_code == 401
    (secret,) = (await view(http, client.client_id)).secrets
    assert (secret.last_used_at, secret.distinct_callers) == (None, 0)


async def test_callers_are_bounded_per_secret_and_secrets_in_total(store: SQLiteStore) -> None:
    metrics = Metrics()
    tracker = UsageTracker(store, metrics, max_secrets=2, max_callers=3)
    for i in range(10):
        tracker.record("c", "s1", f"10.0.0.{i}", 100.0 + i)
    pending = tracker.pending("c", "s1")
    assert pending == Pending(109.0, frozenset({"10.0.0.0", "10.0.0.1", "10.0.0.2", OVERFLOW}))
    tracker.record("c", "s2", "10.0.0.1", 1.0)
    tracker.record("c", "s3", "10.0.0.1", 1.0)  # a third secret before a flush: not recorded, counted
    assert tracker.pending("c", "s3") is None
    assert metrics.usage_dropped._value.get() == 1


class RefusingStore:
    """A store whose usage write fails (the only call a flush makes)."""

    async def record_usage(self, uses: object) -> None:
        raise OSError("disk full")


async def test_a_failed_flush_keeps_its_batch_for_the_next() -> None:
    metrics = Metrics()
    tracker = UsageTracker(RefusingStore(), metrics)  # type: ignore[arg-type]
    tracker.record("c", "s1", "10.0.0.1", 100.0)
    with pytest.raises(OSError, match="disk full"):
        await tracker.flush()
    tracker.record("c", "s1", "10.0.0.2", 90.0)
    assert tracker.pending("c", "s1") == Pending(100.0, frozenset({"10.0.0.1", "10.0.0.2"}))
    assert metrics.usage_flush_failures._value.get() == 1


def test_merge_puts_this_replicas_unflushed_use_on_top_of_the_stores() -> None:
    stored = SecretUsage(datetime.fromtimestamp(100, UTC), 3)
    assert merge(stored, None, 0) == stored
    assert merge(None, Pending(200.0, frozenset({"a"})), 0) == SecretUsage(datetime.fromtimestamp(200, UTC), 1)
    assert merge(stored, Pending(200.0, frozenset({"a", "b"})), 0) == SecretUsage(datetime.fromtimestamp(200, UTC), 3)
    assert merge(stored, Pending(50.0, frozenset({"a"})), 60) == stored  # older than the window


def test_openapi_publishes_the_usage_fields_of_a_secret(tmp_path: Path) -> None:
    schemas = openapi_document(make_settings(tmp_path))["components"]["schemas"]
    secret = schemas["SecretView"]["properties"]
    assert {"lastUsedAt", "distinctCallers"} <= set(secret)
    assert secret["distinctCallers"]["minimum"] == 0


async def test_the_app_flushes_on_its_interval_and_once_more_at_shutdown(
    tmp_path: Path, store: SQLiteStore, clock: FakeClock, add_client: AddClient
) -> None:
    settings = make_settings(tmp_path, usage_flush_interval=3600.0)
    client = await add_client()
    app = create_app(settings, store, BearerFileAuthenticator(settings.admin_token_file), HASH_KEY, clock)  # type: ignore[arg-type]
    async with running(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as http:
            assert (await token(http, client)).status_code == 200
        assert await store.secret_usage(client.client_id, at(clock)) == {}  # the interval has not passed
    reopened = SQLiteStore(store.path)
    try:
        assert await reopened.secret_usage(client.client_id, at(clock)) == {"s1": SecretUsage(at(clock), 1)}
    finally:
        await reopened.close()

"""Introspection (RFC 7662), token revocation (RFC 7009), account revocation and deletion, and the revocation feed."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from tests.integration.security.conftest import Registered, Service, StartService

from credward.domain.secrets import new_client_id

pytestmark = pytest.mark.integration


def access_token(service: Service, client: Registered) -> str:
    response = service.token(client)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def introspect(service: Service, caller: Registered, token: str) -> httpx.Response:
    return httpx.post(
        service.base_url + "/oauth2/introspect", data={"token": token}, auth=(caller.client_id, caller.secret)
    )


def revoke(service: Service, caller: Registered, token: str) -> httpx.Response:
    return httpx.post(
        service.base_url + "/oauth2/revoke", data={"token": token}, auth=(caller.client_id, caller.secret)
    )


def feed(service: Service, since: int, wait: float = 0) -> dict[str, object]:
    response = httpx.get(service.base_url + "/v1/revocations", params={"since": since, "wait": wait}, timeout=30)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_introspection_by_the_tokens_own_client(service: Service) -> None:
    client, stranger = service.register(), service.register()
    token = access_token(service, client)
    body = introspect(service, client, token).json()
    assert body["active"] is True
    assert body["client_id"] == client.client_id
    assert body["scope"] == "storage.read:/data storage.modify:/data/out"
    assert body["token_type"] == "Bearer"
    assert introspect(service, client, "not-a-token").json() == {"active": False}
    # RFC 7662 §4: another client learns nothing, not even that the token is active.
    assert introspect(service, stranger, token).json() == {"active": False}
    unauthenticated = httpx.post(service.base_url + "/oauth2/introspect", data={"token": token})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"
    missing = httpx.post(service.base_url + "/oauth2/introspect", data={}, auth=(client.client_id, client.secret))
    assert missing.json()["error"] == "invalid_request"


def test_an_allowed_resource_server_introspects_every_clients_tokens(start_service: StartService) -> None:
    resource_server_id = new_client_id()
    service = start_service(introspect_allow=resource_server_id)
    resource_server, client, stranger = (
        service.register(client_id=resource_server_id),
        service.register(),
        service.register(),
    )
    token = access_token(service, client)
    body = introspect(service, resource_server, token).json()
    assert body["active"] is True
    assert body["client_id"] == client.client_id
    assert introspect(service, stranger, token).json() == {"active": False}
    with service.http() as http:
        assert (
            http.post(f"/v1/admin/accounts/{client.client_id}/revoke", headers=service.admin_headers()).status_code
            == 200
        )
    assert introspect(service, resource_server, token).json() == {"active": False}


def test_token_revocation(service: Service) -> None:
    client, other = service.register(), service.register()
    token = access_token(service, client)
    cursor = int(feed(service, 0)["cursor"])  # type: ignore[call-overload]
    refused = revoke(service, other, token)
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"
    assert introspect(service, client, token).json()["active"] is True  # refused above: still active
    assert revoke(service, client, token).status_code == 200
    assert revoke(service, client, "garbage").status_code == 200  # RFC 7009 §2.2
    assert introspect(service, client, token).json() == {"active": False}
    events = feed(service, cursor)["events"]
    assert isinstance(events, list)
    assert any(e["kind"] == "token" and e["client_id"] == client.client_id for e in events)


def test_account_revocation_stops_issuance_and_reaches_the_feed(service: Service) -> None:
    client = service.register()
    token = access_token(service, client)
    cursor = int(feed(service, 0)["cursor"])  # type: ignore[call-overload]
    with service.http() as http:
        r = http.post(f"/v1/admin/accounts/{client.client_id}/revoke", headers=service.admin_headers())
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "account"
    denied = service.token(client)
    assert denied.status_code == 401
    assert introspect(service, client, token).status_code == 401  # a revoked client cannot even ask
    body = feed(service, cursor)
    events = body["events"]
    assert isinstance(events, list)
    assert [e["subject"] for e in events if e["kind"] == "account"] == [client.client_id]
    assert body["cursor"] == events[-1]["cursor"]


def test_a_cursor_from_another_store_resumes_from_the_start(service: Service) -> None:
    """After a wiped or replaced store cursors start again at 1: a reader ahead of it gets everything, not silence."""
    client = service.register()
    token = access_token(service, client)
    assert revoke(service, client, token).status_code == 200
    latest = int(feed(service, 0)["cursor"])  # type: ignore[call-overload]
    body = feed(service, latest + 1_000_000)
    events = body["events"]
    assert isinstance(events, list)
    assert events, "a cursor ahead of the store must not read as 'nothing new'"
    assert events[0]["cursor"] == 1
    assert body["cursor"] == events[-1]["cursor"] <= latest
    assert any(e["kind"] == "token" and e["client_id"] == client.client_id for e in events)
    assert feed(service, latest)["events"] == []  # a cursor the store did reach still means "after this"


def test_long_poll_wakes_on_revocation(service: Service) -> None:
    client = service.register()
    cursor = int(feed(service, 0)["cursor"])  # type: ignore[call-overload]
    result: dict[str, object] = {}

    def wait() -> None:
        started = time.monotonic()
        result.update(feed(service, cursor, wait=20))
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    with service.http() as http:
        http.post(f"/v1/admin/accounts/{client.client_id}/revoke", headers=service.admin_headers())
    waiter.join(timeout=25)
    assert result["events"]
    assert float(result["took"]) < 10  # type: ignore[arg-type]


def test_server_sent_events(service: Service) -> None:
    client = service.register()
    cursor = int(feed(service, 0)["cursor"])  # type: ignore[call-overload]
    token = access_token(service, client)
    assert revoke(service, client, token).status_code == 200
    headers = {"Accept": "text/event-stream"}
    with httpx.stream("GET", service.base_url + "/v1/revocations", params={"since": cursor}, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = None
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                break
    assert data is not None
    assert data["kind"] == "token"
    assert data["client_id"] == client.client_id


def test_delete_account(service: Service) -> None:
    client = service.register()
    assert service.token(client).status_code == 200
    with service.http() as http:
        assert http.delete(f"/v1/admin/accounts/{client.client_id}", headers=service.admin_headers()).status_code == 204
        assert http.get(f"/v1/admin/accounts/{client.client_id}", headers=service.admin_headers()).status_code == 404
        assert http.delete(f"/v1/admin/accounts/{client.client_id}", headers=service.admin_headers()).status_code == 404
    assert service.token(client).status_code == 401


def test_admin_refuses_grant_verb_and_bad_bodies(service: Service) -> None:
    client = service.register()
    url = f"/v1/admin/accounts/{client.client_id}"
    grant = {"mappings": [{"name": "rb", "permissions": [{"verbs": ["grant"], "path": ["a"]}]}]}
    with service.http() as http:
        r = http.put(url + "/role-mappings", json=grant, headers=service.admin_headers())
        assert r.status_code == 400
        assert "never hold the grant verb" in r.json()["error_description"]
        bad = http.put(url, json={"secrets": [{"id": "x", "hash": "not-hex"}]}, headers=service.admin_headers())
        assert bad.status_code == 400
        view = http.get(url, headers=service.admin_headers()).json()
    assert view["secrets"] == [
        {"id": client.secret_id, "createdAt": None, "notAfter": None, "lastUsedAt": None, "distinctCallers": 0}
    ]
    assert "hash" not in json.dumps(view)


def test_another_replica_sees_a_revocation_within_the_cache_ttl(service: Service, start_service: StartService) -> None:
    """Two replicas on one store: a revocation through A stops issuance on B within B's account-cache TTL."""
    replica = start_service(account_cache_ttl="1s")
    client = replica.register()  # hashed under the replica's key (the fixture gives each service its own)
    assert replica.token(client).status_code == 200
    with replica.http() as http:
        assert http.get(f"/v1/admin/accounts/{client.client_id}", headers=replica.admin_headers()).status_code == 200
    with service.http() as http:
        r = http.post(f"/v1/admin/accounts/{client.client_id}/revoke", headers=service.admin_headers())
    assert r.status_code == 200
    time.sleep(1.5)
    assert replica.token(client).status_code == 401

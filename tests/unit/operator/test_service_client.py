"""credward.operator.service over an injected httpx transport (no server): wire models and error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from credward.api.admin import AccountIn, RoleMapping, RoleMappingsIn
from credward.errors import ServiceRefused, ServiceUnavailable
from credward.operator.service import AdminClient, BearerFile

VIEW = {
    "clientId": "c1",
    "identity": "c1@clients.x",
    "status": "active",
    "tokenTTLSeconds": 300,
    "effectiveTokenTTLSeconds": 300,
    "secrets": [{"id": "s1"}],
    "future": "ignored",
}


def client(handler: Callable[[httpx.Request], httpx.Response], token: Path) -> AdminClient:
    transport = httpx.MockTransport(handler)
    return AdminClient(httpx.AsyncClient(base_url="http://svc", transport=transport, auth=BearerFile(token)))


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("first\n")
    return path


async def test_put_account_sends_the_model_and_the_bearer_token(token: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201 if request.method == "PUT" else 200, json=VIEW)

    c = client(handler, token)
    view = await c.put_account("c1", AccountIn(display_name="d", token_ttl_seconds=300))
    assert view.client_id == "c1"
    request = seen[0]
    assert (request.method, request.url.path) == ("PUT", "/v1/admin/accounts/c1")
    assert request.headers["authorization"] == "Bearer first"
    assert json.loads(request.content)["displayName"] == "d"
    token.write_text("second-token\n")  # the kubelet rotated it
    await c.get_account("c1")
    assert seen[1].headers["authorization"] == "Bearer second-token"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(503, json={"error": "unavailable"}), ServiceUnavailable),
        (httpx.Response(429, headers={"Retry-After": "3"}), ServiceUnavailable),
        (httpx.Response(200, json={"not": "a view"}), ServiceUnavailable),
        (httpx.Response(400, json={"error": "invalid_request", "error_description": "groups.0: bad"}), ServiceRefused),
        (httpx.Response(401, json={"error": "unauthorized"}), ServiceRefused),
        (httpx.Response(403, json={"error": "forbidden"}), ServiceRefused),
    ],
)
async def test_http_failures_are_mapped(token: Path, response: httpx.Response, expected: type[Exception]) -> None:
    c = client(lambda request: response, token)
    with pytest.raises(expected):
        await c.put_account("c1", AccountIn())


async def test_refusal_carries_the_services_description(token: Path) -> None:
    body = {"error": "invalid_request", "error_description": "groups.0: bad"}
    c = client(lambda request: httpx.Response(400, json=body), token)
    with pytest.raises(ServiceRefused) as info:
        await c.put_account("c1", AccountIn())
    assert "groups.0: bad" in info.value.message
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")]
)
async def test_transport_errors_are_unavailable(token: Path, error: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ServiceUnavailable):
        await client(handler, token).info()


async def test_404_means_absent_or_done(token: Path) -> None:
    c = client(lambda request: httpx.Response(404, json={"error": "not_found"}), token)
    assert await c.get_account("c1") is None
    assert await c.put_role_mappings("c1", RoleMappingsIn(mappings=(RoleMapping(name="a"),))) is None
    assert await c.revoke("c1") is False
    await c.delete_account("c1")  # a missing account is deleted already


async def test_missing_token_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    c = client(lambda request: httpx.Response(200, json=VIEW), tmp_path / "absent")
    with pytest.raises(ServiceUnavailable, match="admin token file"):
        await c.get_account("c1")


async def test_concurrent_account_calls_share_one_batch_request(token: Path) -> None:

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ops = json.loads(request.content)["operations"]
        results = [
            {"clientId": o["clientId"], "status": 404, "error": "no account"}
            if o["clientId"] == "missing"
            else {"clientId": o["clientId"], "status": 201 if o["op"] == "put" else 200, "account": VIEW}
            for o in ops
        ]
        return httpx.Response(200, json={"results": results})

    transport = httpx.MockTransport(handler)
    c = AdminClient(httpx.AsyncClient(base_url="http://svc", transport=transport), batch_window=0.01)
    mappings = RoleMappingsIn(mappings=(RoleMapping(name="b", roles=("r",)),))
    put, got, missing, mapped = await asyncio.gather(
        c.put_account("c1", AccountIn()),
        c.get_account("c2"),
        c.get_account("missing"),
        c.put_role_mappings("missing", mappings),
    )
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/v1/admin/batch")]
    assert [o["op"] for o in json.loads(seen[0].content)["operations"]] == ["put", "get", "get", "role-mappings"]
    assert put.client_id == "c1"
    assert got is not None
    assert missing is None
    assert mapped is None


async def test_a_refused_batch_is_retried_one_account_at_a_time(token: Path) -> None:

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/admin/batch":
            return httpx.Response(404, json={"error": "not_found"})  # an older service
        if request.url.path.endswith("/bad"):
            return httpx.Response(400, json={"error": "invalid_request", "error_description": "groups.0: bad"})
        return httpx.Response(200, json=VIEW)

    transport = httpx.MockTransport(handler)
    c = AdminClient(httpx.AsyncClient(base_url="http://svc", transport=transport), batch_window=0.01)
    good, bad = await asyncio.gather(c.get_account("c1"), c.put_account("bad", AccountIn()), return_exceptions=True)
    assert not isinstance(good, BaseException)
    assert good is not None
    assert good.client_id == "c1"
    assert isinstance(bad, ServiceRefused)
    assert "groups.0: bad" in bad.message
    await c.get_account("c3")  # no batch endpoint: not asked again
    assert seen == [
        "POST /v1/admin/batch",
        "GET /v1/admin/accounts/c1",
        "PUT /v1/admin/accounts/bad",
        "GET /v1/admin/accounts/c3",
    ]


async def test_concurrent_info_calls_share_one_request(token: Path) -> None:

    seen: list[str] = []
    info = {"storeId": "s", "accounts": 0, "hashKeyId": "h", "maxTokenTTLSeconds": 300}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=info)

    transport = httpx.MockTransport(handler)
    c = AdminClient(httpx.AsyncClient(base_url="http://svc", transport=transport))
    answers = await asyncio.gather(*(c.info() for _ in range(20)))
    assert seen == ["/v1/admin/info"]
    assert {a.store_id for a in answers} == {"s"}
    await c.info()
    assert len(seen) == 2  # a later call asks again

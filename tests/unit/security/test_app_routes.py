"""Routes other than the token endpoint, in-process: feed parameters, admin guards, discovery, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from tests.unit.security.security_fakes import ADMIN_TOKEN, ISSUER

from credward.security.app import CredwardApp

pytestmark = pytest.mark.unit


@pytest.fixture
async def http(app: CredwardApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


@pytest.mark.parametrize("params", [{"since": "-1"}, {"wait": "nan"}, {"wait": "inf"}, {"since": "x"}])
async def test_feed_rejects_bad_parameters(http: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await http.get("/v1/revocations", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_feed_empty(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/revocations", params={"since": "0"})).json() == {"events": [], "cursor": 0}


async def test_admin_guards(http: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await http.get("/v1/admin/accounts/abc")).status_code == 401
    assert (await http.get("/v1/admin/accounts/abc", headers={"Authorization": "Bearer no"})).status_code == 401
    assert (await http.get("/v1/admin/accounts/a%20b", headers=admin)).status_code == 400
    assert (await http.get("/v1/admin/accounts/abc", headers=admin)).status_code == 404
    bad = await http.put("/v1/admin/accounts/abc", headers=admin, json={"tokenTTLSeconds": 0, "unknown": 1})
    assert bad.status_code == 400
    assert "tokenTTLSeconds" in bad.json()["error_description"]
    assert "unknown" in bad.json()["error_description"]


async def test_discovery_and_openapi(http: httpx.AsyncClient) -> None:
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER
    assert meta["jwks_uri"] == ISSUER + "/jwks.json"
    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "/oauth2/token" in doc["paths"]


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
async def test_oversized_bodies_are_refused_without_buffering(http: httpx.AsyncClient, path: str) -> None:
    body = b"token=" + b"x" * (64 * 1024)
    response = await http.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"

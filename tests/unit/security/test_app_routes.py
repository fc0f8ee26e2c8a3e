"""Routes other than the token endpoint, in-process: feed parameters, admin guards, discovery, OpenAPI."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pydantic import ValidationError
from tests.unit.security.security_fakes import ADMIN_TOKEN, ISSUER, Client, MemoryStore

from credward.security.admin import AccountIn
from credward.security.app import CredwardApp
from credward.security.store.codec import UnstorableText

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


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
@pytest.mark.parametrize("name", ["Authorization", "Content-Type"])
async def test_repeated_authorization_or_content_type_is_invalid_request(
    http: httpx.AsyncClient, add_client: Callable[..., Client], path: str, name: str
) -> None:
    """Stacks disagree on which of two headers counts (first or last), so neither is used: 400, never a token."""
    client = add_client()
    good = "Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    form = "application/x-www-form-urlencoded"
    values = {"Authorization": ["Basic Ym9ndXM6Ym9ndXM=", good], "Content-Type": [form, form]}[name]
    headers = [(name, v) for v in values]
    if name == "Content-Type":
        headers.append(("Authorization", good))
    else:
        headers.append(("Content-Type", form))
    response = await http.post(path, content=b"grant_type=client_credentials&token=x", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.text


@pytest.mark.parametrize("field", ["displayName", "namespace", "identity"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
async def test_admin_refuses_unstorable_text_with_400_naming_the_field(
    http: httpx.AsyncClient, field: str, bad: str
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    body = json.dumps({field: bad}).encode()  # ASCII JSON: the NUL or surrogate travels as a \\u escape
    response = await http.put("/v1/admin/accounts/abc", headers=admin, content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    # A NUL is valid JSON and reaches the model, which names the field; pydantic's JSON parser already refuses
    # a lone surrogate escape (naming its position), and the model check covers surrogates that arrive otherwise.
    if "\x00" in bad:
        assert field in response.json()["error_description"]


@pytest.mark.parametrize("where", ["audiences", "groups"])
async def test_admin_refuses_unstorable_list_items(http: httpx.AsyncClient, where: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    response = await http.put("/v1/admin/accounts/abc", headers=admin, content=json.dumps({where: ["ok", "\x00"]}))
    assert response.status_code == 400, response.text
    assert where in response.json()["error_description"]
    roles = {"mappings": [{"name": "rb", "roles": ["a\x00"], "permissions": []}]}
    await http.put("/v1/admin/accounts/abc", headers=admin, content=b"{}")
    response = await http.put("/v1/admin/accounts/abc/role-mappings", headers=admin, content=json.dumps(roles))
    assert response.status_code == 400, response.text
    assert "roles" in response.json()["error_description"]


async def test_unstorable_text_from_the_store_is_a_400_not_a_500(
    http: httpx.AsyncClient, memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop: if a store still refuses a text, the admin API answers 400 with the store's message."""

    async def refuse(account: object) -> None:
        raise UnstorableText("display_name contains a NUL character or a lone surrogate, which cannot be stored")

    monkeypatch.setattr(memory_store, "put_account", refuse)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await http.put("/v1/admin/accounts/abc", headers=admin, json={"displayName": "fine"})
    assert response.status_code == 400, response.text
    assert "display_name" in response.json()["error_description"]


def test_admin_models_refuse_lone_surrogates_however_they_arrive() -> None:
    with pytest.raises(ValidationError, match="displayName"):
        AccountIn.model_validate({"displayName": "a\ud800"})

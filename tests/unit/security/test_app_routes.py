"""Routes other than the token grant, in-process: feed parameters, the admin API, discovery, OpenAPI, errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from pydantic import ValidationError
from tests.unit.security.security_fixtures import (
    ADMIN,
    ADMIN_TOKEN,
    ISSUER,
    Client,
    FakeClock,
    asgi,
    make_settings,
    running,
)

from credward.api.admin import AccountIn, AccountView, ServiceInfo
from credward.domain.secrets import hash_key_id
from credward.errors import InvalidScope, UnstorableText
from credward.security.app import CredwardApp, metadata
from credward.security.edge import describe, error_reply
from credward.security.openapi import openapi_document
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.unit

AddClient = Callable[..., Awaitable[Client]]
ALLOWED = set(range(0x20, 0x22)) | set(range(0x23, 0x5C)) | set(range(0x5D, 0x7F))
HASH = "ab" * 32


def basic(client: Client) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()}


# -- revocation feed -------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{"since": "-1"}, {"wait": "nan"}, {"wait": "inf"}, {"since": "x"}])
async def test_feed_rejects_bad_parameters(http: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await http.get("/v1/revocations", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_feed_empty(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/revocations", params={"since": "0"})).json() == {"events": [], "cursor": 0}


# -- admin API -------------------------------------------------------------------------------


async def test_admin_guards(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/admin/accounts/abc")).status_code == 401
    assert (await http.get("/v1/admin/accounts/abc", headers={"Authorization": "Bearer no"})).status_code == 401
    assert (await http.get("/v1/admin/accounts/a%20b", headers=ADMIN)).status_code == 404  # percent-encoded path
    assert (await http.get("/v1/admin/accounts/abc", headers=ADMIN)).status_code == 404
    bad = await http.put("/v1/admin/accounts/abc", headers=ADMIN, json={"tokenTTLSeconds": 0, "unknown": 1})
    assert bad.status_code == 400
    assert "tokenTTLSeconds" in bad.json()["error_description"]
    assert "unknown" in bad.json()["error_description"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/admin/accounts/.", None),
        ("/v1/admin/accounts/..", None),
        ("/v1/admin/accounts/..", b"/v1/admin/accounts/%2e%2e"),
        ("/v1/admin/accounts/a.b", None),
        ("/v1/admin/accounts/-a", None),
        ("/v1/admin/accounts/" + "a" * 129, None),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_admin_refuses_client_ids_the_crd_would_not_make(
    app: CredwardApp, store: SQLiteStore, path: str, raw: bytes | None, method: str
) -> None:
    headers = ((b"authorization", f"Bearer {ADMIN_TOKEN}".encode()), (b"content-type", b"application/json"))
    seen = await asgi(app, method, path, raw_path=raw, headers=headers, body=b"{}")
    assert seen.status in (400, 404), seen.body
    assert (await store.info()).accounts == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"groups": ["ci builders"]}, "groups.0"),
        ({"groups": ["/ci", "/ci"]}, "groups"),
        ({"tokenTTLSeconds": "300"}, "tokenTTLSeconds"),
        ({"tokenTTLSeconds": True}, "tokenTTLSeconds"),
        ({"tokenTTLSeconds": 300.0}, "tokenTTLSeconds"),
        ({"tokenTTLSeconds": 86401}, "tokenTTLSeconds"),
        ({"audiences": ["has space"]}, "audiences.0"),
        ({"expiresAt": "2030-01-01T00:00:00"}, "expiresAt"),  # no time zone: ambiguous
        ({"status": "enabled"}, "status"),
        ({"namespace": "Team_A"}, "namespace"),
        ({"secrets": [{"id": "a.b", "hash": HASH}]}, "secrets.0.id"),
        ({"secrets": [{"id": "a", "hash": "AB" * 32}]}, "secrets.0.hash"),
        ({"secrets": [{"id": "a", "hash": HASH, "value": "cws_x"}]}, "secrets.0.value"),
    ],
)
async def test_admin_accounts_are_validated_as_strictly_as_the_crd(
    http: httpx.AsyncClient, store: SQLiteStore, body: dict[str, Any], field: str
) -> None:
    response = await http.put("/v1/admin/accounts/abc", headers=ADMIN, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["error_description"]
    assert await store.get_account("abc") is None


@pytest.mark.parametrize(
    ("permission", "why"),
    [
        ({"verbs": ["read"], "path": ["my dir"]}, "path"),
        ({"verbs": ["read"], "path": ["a", "*", "b"]}, "path"),
        ({"verbs": ["read"], "path": ["a", ".."]}, "path"),
        ({"verbs": ["read"], "path": []}, "path"),
        ({"verbs": ["grant"], "path": ["a"]}, "never hold the grant verb"),
        ({"verbs": ["read", "read"], "path": ["a"]}, "distinct"),
        ({"verbs": [], "path": ["a"]}, "verbs"),
    ],
)
async def test_admin_role_mappings_are_validated_as_strictly_as_the_crd(
    http: httpx.AsyncClient, permission: dict[str, Any], why: str
) -> None:
    assert (await http.put("/v1/admin/accounts/abc", headers=ADMIN, json={})).status_code == 201
    body = {"mappings": [{"name": "rb", "roles": ["reader"], "permissions": [permission]}]}
    response = await http.put("/v1/admin/accounts/abc/role-mappings", headers=ADMIN, json=body)
    assert response.status_code == 400, response.text
    assert why in response.json()["error_description"]
    view = (await http.get("/v1/admin/accounts/abc", headers=ADMIN)).json()
    assert view["roleMappings"] == []


async def test_admin_account_round_trip_through_the_wire_models(http: httpx.AsyncClient) -> None:
    body = {
        "displayName": "Nightly",
        "namespace": "team-a",
        "name": "backup",
        "audiences": ["https://storage.test"],
        "groups": ["/team-a"],
        "tokenTTLSeconds": 7200,
        "expiresAt": "2031-01-01T00:00:00Z",
        "secrets": [{"id": "s1", "hash": HASH, "createdAt": "2030-01-01T00:00:00Z", "notAfter": None}],
    }
    created = await http.put("/v1/admin/accounts/abc", headers=ADMIN, json=body)
    assert created.status_code == 201, created.text
    view = AccountView.model_validate(created.json())
    assert view.client_id == "abc"
    assert view.identity == "abc@clients.issuer.test"
    assert view.token_ttl_seconds == 7200
    assert view.effective_token_ttl_seconds == 3600  # capped by --max-token-ttl
    assert [s.id for s in view.secrets] == ["s1"]
    assert HASH not in created.text
    mappings = {"mappings": [{"name": "rb", "roles": ["r"], "permissions": [{"verbs": ["read"], "path": ["a", "*"]}]}]}
    updated = await http.put("/v1/admin/accounts/abc/role-mappings", headers=ADMIN, json=mappings)
    assert updated.status_code == 200, updated.text
    assert updated.json()["roleMappings"][0]["permissions"] == [{"verbs": ["read"], "path": ["a"]}]
    replaced = await http.put("/v1/admin/accounts/abc", headers=ADMIN, json={**body, "tokenTTLSeconds": 60})
    assert replaced.status_code == 200
    assert replaced.json()["effectiveTokenTTLSeconds"] == 60
    assert replaced.json()["roleMappings"] == updated.json()["roleMappings"]  # a PUT of the account keeps them


async def test_admin_missing_accounts_are_404(http: httpx.AsyncClient) -> None:
    """The operator treats 404 on DELETE as done, and learns from 404 on role mappings that it must PUT first."""
    assert (await http.delete("/v1/admin/accounts/ghost", headers=ADMIN)).status_code == 404
    mappings: dict[str, list[object]] = {"mappings": []}
    assert (await http.put("/v1/admin/accounts/ghost/role-mappings", headers=ADMIN, json=mappings)).status_code == 404
    assert (await http.post("/v1/admin/accounts/ghost/revoke", headers=ADMIN)).status_code == 404
    assert (await http.put("/v1/admin/accounts/ghost", headers=ADMIN, json={})).status_code == 201
    assert (await http.delete("/v1/admin/accounts/ghost", headers=ADMIN)).status_code == 204
    assert (await http.delete("/v1/admin/accounts/ghost", headers=ADMIN)).status_code == 404


async def test_admin_info_names_the_store_and_the_hash_key(
    http: httpx.AsyncClient, add_client: AddClient, tmp_path: Path
) -> None:
    assert (await http.get("/v1/admin/info")).status_code == 401
    first = ServiceInfo.model_validate((await http.get("/v1/admin/info", headers=ADMIN)).json())
    assert first.accounts == 0
    assert first.hash_key_id == hash_key_id(b"k" * 32)
    assert first.max_token_ttl_seconds == 3600
    await add_client()
    again = ServiceInfo.model_validate((await http.get("/v1/admin/info", headers=ADMIN)).json())
    assert (again.store_id, again.accounts) == (first.store_id, 1)
    other = SQLiteStore(tmp_path / "other.db")  # a fresh store: a new id
    await other.migrate()
    try:
        assert (await other.info()).store_id not in ("", first.store_id)
    finally:
        await other.close()


@pytest.mark.parametrize("field", ["displayName", "identity"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
async def test_admin_refuses_unstorable_text_with_400(http: httpx.AsyncClient, field: str, bad: str) -> None:
    admin = {**ADMIN, "Content-Type": "application/json"}
    body = json.dumps({field: bad}).encode()  # ASCII JSON: the NUL or surrogate travels as a \\u escape
    response = await http.put("/v1/admin/accounts/abc", headers=admin, content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    # A NUL is valid JSON and reaches the model, which names the field; pydantic's JSON parser already refuses
    # a lone surrogate escape (naming its position), and the model check covers surrogates that arrive otherwise.
    if "\x00" in bad:
        assert field in response.json()["error_description"]


def test_unstorable_text_is_answered_400_with_the_stores_message() -> None:
    """The backstop behind the models: a store refusing a text is a 400 naming the field, not a 500."""
    reply = error_reply(UnstorableText("display_name contains a NUL character or a lone surrogate"))
    assert reply.status == 400
    assert json.loads(reply.body)["error_description"].startswith("display_name contains")


def test_admin_models_refuse_lone_surrogates_however_they_arrive() -> None:
    with pytest.raises(ValidationError, match="displayName"):
        AccountIn.model_validate({"displayName": "a\ud800"})


async def test_admin_body_is_limited(http: httpx.AsyncClient) -> None:
    body = json.dumps({"displayName": "x" * (2 * 1024 * 1024)})
    response = await http.put(
        "/v1/admin/accounts/abc", headers={**ADMIN, "Content-Type": "application/json"}, content=body
    )
    assert response.status_code == 413


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["scope 'a\"b\\c' is bad", "scope 'ü\u202e\x00' is bad", "x" * 1000])
def test_error_descriptions_hold_only_rfc6749_characters(text: str) -> None:
    body = json.loads(error_reply(InvalidScope(text)).body)
    assert body["error"] == "invalid_scope"
    assert all(ord(c) in ALLOWED for c in body["error_description"])
    assert len(body["error_description"]) <= 300
    assert describe("plain words: ok") == "plain words: ok"


@pytest.mark.parametrize(
    "scope", ['storage.read:/a"b', "storage.read:/\\x", "storage.read:/é", 'x"y', "storage.read:/a\x7fb"]
)
async def test_token_errors_never_echo_characters_rfc6749_forbids(
    http: httpx.AsyncClient, add_client: AddClient, scope: str
) -> None:
    client = await add_client()
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": scope}, headers=basic(client)
    )
    assert response.status_code == 400, response.text
    assert all(ord(c) in ALLOWED for c in response.json()["error_description"])


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
async def test_oversized_bodies_are_refused_without_buffering(http: httpx.AsyncClient, path: str) -> None:
    body = b"token=" + b"x" * (64 * 1024)
    response = await http.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
@pytest.mark.parametrize("name", ["Authorization", "Content-Type"])
async def test_repeated_authorization_or_content_type_is_invalid_request(
    http: httpx.AsyncClient, add_client: AddClient, path: str, name: str
) -> None:
    """Stacks disagree on which of two headers counts (first or last), so neither is used: 400, never a token."""
    client = await add_client()
    good = basic(client)["Authorization"]
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


async def test_get_and_put_on_the_token_endpoint_are_405_not_another_handler(http: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await http.request(method, "/oauth2/token")
        assert response.status_code == 405, (method, response.text)
        assert "ok" not in response.text


# -- introspection (RFC 7662 §4) ------------------------------------------------------------


async def _introspect(http: httpx.AsyncClient, caller: Client, token: str) -> dict[str, Any]:
    response = await http.post("/oauth2/introspect", data={"token": token}, headers=basic(caller))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_introspection_answers_only_the_tokens_own_client_or_an_allowed_resource_server(
    tmp_path: Path, store: SQLiteStore, add_client: AddClient
) -> None:
    from credward.security.adminauth import BearerFileAuthenticator
    from credward.security.app import create_app

    owner, stranger, resource_server = await add_client(), await add_client(), await add_client()
    settings = make_settings(tmp_path, introspect_allow=(resource_server.client_id,))
    assert settings.admin_token_file is not None
    app = create_app(settings, store, BearerFileAuthenticator(settings.admin_token_file), b"k" * 32)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as http:
        issued = await http.post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic(owner))
        token = issued.json()["access_token"]
        assert (await _introspect(http, stranger, token)) == {"active": False}
        own = await _introspect(http, owner, token)
        allowed = await _introspect(http, resource_server, token)
    assert own["active"] is True
    assert own["client_id"] == owner.client_id
    assert allowed == own
    assert allowed["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]


# -- discovery and OpenAPI -------------------------------------------------------------------


def test_discovery_advertises_only_what_exists(tmp_path: Path) -> None:
    meta = metadata(make_settings(tmp_path))
    assert meta["issuer"] == ISSUER
    assert meta["jwks_uri"] == ISSUER + "/jwks.json"
    assert meta["response_types_supported"] == []  # no authorization endpoint, so no implicit "token"
    assert "token_endpoint_auth_signing_alg_values_supported" not in meta  # no JWT client authentication
    assert "id_token_signing_alg_values_supported" not in meta  # no ID tokens
    assert meta["scopes_supported"] == ["storage.read:/", "storage.modify:/"]
    scitokens = metadata(make_settings(tmp_path, scope_profile="scitokens"))
    assert scitokens["scopes_supported"] == ["read:/", "write:/"]


def _failing_checks(meta: AuthorizationServerMetadata) -> dict[str, str]:
    failures = {}
    for name in dir(meta):
        if name.startswith("validate_"):
            try:
                getattr(meta, name)()
            except ValueError as exc:
                failures[name] = str(exc)
    return failures


def test_metadata_against_authlibs_validators(tmp_path: Path) -> None:
    """What authlib's strict validators say, exactly (docs/security-service.md explains each refusal).

    RFC 8414: every check passes but ``response_types_supported``, which authlib reads as missing when
    empty. OIDC Discovery: additionally no ``id_token_signing_alg_values_supported`` (credward issues no
    ID tokens). Anything else failing, or one of these passing, fails this test.
    """
    meta = metadata(make_settings(tmp_path))
    rfc8414 = _failing_checks(AuthorizationServerMetadata(meta))
    assert rfc8414 == {"validate_response_types_supported": '"response_types_supported" is required'}
    oidc = _failing_checks(OpenIDProviderMetadata(meta))
    assert set(oidc) == {"validate_response_types_supported", "validate_id_token_signing_alg_values_supported"}


async def test_discovery_is_served_at_both_well_known_paths(http: httpx.AsyncClient) -> None:
    oidc = await http.get("/.well-known/openid-configuration")
    rfc8414 = await http.get("/.well-known/oauth-authorization-server")
    assert oidc.status_code == rfc8414.status_code == 200
    assert oidc.json() == rfc8414.json()
    assert oidc.json()["token_endpoint"] == ISSUER + "/oauth2/token"


def test_openapi_admin_schemas_are_the_wire_models(tmp_path: Path) -> None:
    doc = openapi_document(make_settings(tmp_path))
    schemas = doc["components"]["schemas"]
    assert schemas["AccountIn"]["additionalProperties"] is False
    assert schemas["AccountIn"]["properties"]["tokenTTLSeconds"]["type"] == "integer"
    put = doc["paths"]["/v1/admin/accounts/{clientId}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AccountIn"}
    assert "/v1/admin/info" in doc["paths"]
    assert 'additionalProperties": true' not in json.dumps(schemas)


async def test_admin_batch_answers_each_operation_as_its_own_endpoint_would(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    account = {"displayName": "Batched", "secrets": [{"id": "s1", "hash": HASH}]}
    mappings = {"mappings": [{"name": "rb", "roles": ["r"]}]}
    ops = [
        {"op": "put", "clientId": "b1", "account": account},
        {"op": "role-mappings", "clientId": "b1", "mappings": mappings},
        {"op": "get", "clientId": "b1"},
        {"op": "get", "clientId": "missing"},
        {"op": "role-mappings", "clientId": "missing", "mappings": mappings},
    ]
    answer = await http.post("/v1/admin/batch", headers=ADMIN, json={"operations": ops})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [(r["clientId"], r["status"]) for r in results] == [
        ("b1", 201),
        ("b1", 200),
        ("b1", 200),
        ("missing", 404),
        ("missing", 404),
    ]
    assert results[2]["account"]["roleMappings"][0]["name"] == "rb"
    assert results[3]["account"] is None
    assert "missing" in results[3]["error"]
    assert HASH not in answer.text
    single = await http.get("/v1/admin/accounts/b1", headers=ADMIN)
    assert single.json() == results[2]["account"]
    # The same account again (what a restarted operator pushes) is not written again.
    clock.now += 60
    again = await http.post("/v1/admin/batch", headers=ADMIN, json={"operations": ops[:1]})
    assert again.json()["results"][0]["status"] == 200
    assert again.json()["results"][0]["account"]["updatedAt"] == results[0]["account"]["updatedAt"]


@pytest.mark.parametrize(
    ("operations", "field"),
    [
        ([{"op": "put", "clientId": "b1"}], "account is required"),
        ([{"op": "get", "clientId": "b1", "account": {}}], "account is required"),
        ([{"op": "get", "clientId": "b.1"}], "clientId"),
        ([{"op": "get", "clientId": "b1"}, {"op": "get", "clientId": "b1"}], "once"),
        ([], "operations"),
        ([{"op": "get", "clientId": f"b{i}"} for i in range(257)], "operations"),
        ([{"op": "delete", "clientId": "b1"}], "op"),
    ],
)
async def test_admin_batch_is_validated_as_strictly_as_the_single_endpoints(
    http: httpx.AsyncClient, operations: list[dict[str, Any]], field: str
) -> None:
    answer = await http.post("/v1/admin/batch", headers=ADMIN, json={"operations": operations})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error_description"]
    assert (await http.post("/v1/admin/batch", json={"operations": operations})).status_code == 401

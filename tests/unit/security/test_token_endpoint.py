"""The token endpoint in-process (ASGI transport, memory store, fake clock): every grant path and RFC error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from tests.unit.security.security_fakes import ISSUER, Client, FakeClock, MemoryStore

from credward.security.app import CredwardApp

pytestmark = pytest.mark.unit

WLCG_ANY = "https://wlcg.cern.ch/jwt/v1/any"


@pytest.fixture
async def http(app: CredwardApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


async def token(http: httpx.AsyncClient, client: Client | None, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", **form}
    if client is None:
        return await http.post("/oauth2/token", data=data)
    return await http.post("/oauth2/token", data=data, auth=(client.client_id, client.secret))


async def verify(http: httpx.AsyncClient, access_token: str, audience: str | list[str]) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict((await http.get("/jwks.json")).json())
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        access_token, key, algorithms=["ES256"], audience=audience, issuer=ISSUER, options={"verify_iat": False}
    )
    return claims


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text


async def test_basic_auth_issues_a_verifiable_token(
    http: httpx.AsyncClient, add_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = add_client()
    clock.now = datetime.now(UTC).timestamp()
    response = await token(http, client)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "storage.read:/data storage.modify:/data/out"
    claims = await verify(http, body["access_token"], "https://storage.test")
    assert claims["sub"] == f"{client.client_id}@clients.issuer.test"
    assert claims["client_id"] == client.client_id
    assert claims["roles"] == ["reader", "writer"]
    assert claims["wlcg.ver"] == "1.0"
    assert claims["wlcg.groups"] == ["/cms/prod", "/cms"]
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"


async def test_client_secret_post(http: httpx.AsyncClient, add_client: Callable[..., Client]) -> None:
    client = add_client()
    response = await token(http, None, client_id=client.client_id, client_secret=client.secret)
    assert response.status_code == 200, response.text


async def test_two_auth_methods_at_once_is_invalid_request(
    http: httpx.AsyncClient, add_client: Callable[..., Client]
) -> None:
    client = add_client()
    response = await token(http, client, client_secret=client.secret)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "auth",
    [None, ("nobody", "cws_nothing"), "wrong-secret"],
)
async def test_bad_client_is_401_with_www_authenticate(
    http: httpx.AsyncClient, add_client: Callable[..., Client], auth: object
) -> None:
    client = add_client()
    if auth == "wrong-secret":
        auth = (client.client_id, "cws_" + "x" * 43)
    response = await http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth)  # type: ignore[arg-type]
    assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_malformed_basic_header_is_invalid_client(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!notbase64"}
    )
    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": ""}, "invalid_request"),
        ({}, "invalid_request"),
    ],
)
async def test_grant_type_errors(
    http: httpx.AsyncClient, add_client: Callable[..., Client], form: dict[str, str], error: str
) -> None:
    client = add_client()
    response = await http.post("/oauth2/token", data=form, auth=(client.client_id, client.secret))
    assert_error(response, 400, error)


async def test_repeated_parameter_is_invalid_request(
    http: httpx.AsyncClient, add_client: Callable[..., Client]
) -> None:
    client = add_client()
    response = await http.post(
        "/oauth2/token",
        content=b"grant_type=client_credentials&scope=a&scope=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(client.client_id, client.secret),
    )
    assert_error(response, 400, "invalid_request")


async def test_json_body_is_invalid_request(http: httpx.AsyncClient, add_client: Callable[..., Client]) -> None:
    client = add_client()
    response = await http.post(
        "/oauth2/token", json={"grant_type": "client_credentials"}, auth=(client.client_id, client.secret)
    )
    assert_error(response, 400, "invalid_request")


async def test_get_is_not_allowed(http: httpx.AsyncClient) -> None:
    assert (await http.get("/oauth2/token")).status_code == 405


@pytest.mark.parametrize(
    ("scope", "granted"),
    [
        ("storage.read:/data/sub", "storage.read:/data/sub"),
        ("storage.read:/data storage.modify:/data/out/x", "storage.read:/data storage.modify:/data/out/x"),
    ],
)
async def test_downscoping(
    http: httpx.AsyncClient, add_client: Callable[..., Client], scope: str, granted: str
) -> None:
    response = await token(http, add_client(), scope=scope)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == granted


@pytest.mark.parametrize(
    "scope",
    [
        "storage.read:/other",
        "storage.modify:/data",
        "storage.read:data",
        "read:/data",
        "storage.read:/data/../etc",
        "a  b",
    ],
)
async def test_scope_beyond_holding_is_invalid_scope(
    http: httpx.AsyncClient, add_client: Callable[..., Client], scope: str
) -> None:
    assert_error(await token(http, add_client(), scope=scope), 400, "invalid_scope")


async def test_audience_and_resource(http: httpx.AsyncClient, add_client: Callable[..., Client]) -> None:
    client = add_client(audiences=("https://storage.test", "https://other.test"))
    ok = await token(http, client, resource="https://other.test")
    assert ok.status_code == 200
    assert jwt.decode(ok.json()["access_token"], options={"verify_signature": False})["aud"] == "https://other.test"
    both = await token(http, client)
    claims = jwt.decode(both.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == ["https://storage.test", "https://other.test"]
    assert_error(await token(http, client, audience="https://evil.test"), 400, "invalid_target")
    assert_error(await token(http, client, resource="not a uri"), 400, "invalid_target")


async def test_account_without_audiences_gets_the_profile_any(
    http: httpx.AsyncClient, add_client: Callable[..., Client]
) -> None:
    response = await token(http, add_client(audiences=()))
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["aud"] == WLCG_ANY


async def test_ttl_is_capped_by_server_and_account_expiry(
    http: httpx.AsyncClient, add_client: Callable[..., Client], clock: FakeClock
) -> None:
    assert (await token(http, add_client(ttl=86400))).json()["expires_in"] == 3600
    soon = datetime.fromtimestamp(clock.now + 42, UTC)
    assert (await token(http, add_client(expires_at=soon))).json()["expires_in"] == 42


async def test_expired_account_and_expired_secret_are_refused(
    http: httpx.AsyncClient, add_client: Callable[..., Client], clock: FakeClock
) -> None:
    past = datetime.fromtimestamp(clock.now - 1, UTC)
    assert_error(await token(http, add_client(expires_at=past)), 401, "invalid_client")
    assert_error(await token(http, add_client(not_after=past)), 401, "invalid_client")


async def test_client_throttle_answers_429_but_never_locks_out_the_right_secret(
    http: httpx.AsyncClient, add_client: Callable[..., Client], clock: FakeClock
) -> None:
    client = add_client()
    wrong = Client(client.client_id, "cws_wrong")
    for _ in range(3):
        assert_error(await token(http, wrong), 401, "invalid_client")
    locked = await token(http, wrong)
    assert_error(locked, 429, "temporarily_unavailable")
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert (await token(http, client)).status_code == 200
    clock.now += 61
    assert_error(await token(http, wrong), 401, "invalid_client")


async def test_throttle_per_ip(http: httpx.AsyncClient, add_client: Callable[..., Client]) -> None:
    for i in range(5):
        assert_error(await token(http, Client(f"guess-{i}", "cws_wrong")), 401, "invalid_client")
    assert_error(await token(http, add_client()), 429, "temporarily_unavailable")


async def test_account_cache_serves_repeat_requests_without_store_reads(
    http: httpx.AsyncClient, add_client: Callable[..., Client], memory_store: MemoryStore, clock: FakeClock
) -> None:
    client = add_client()
    await token(http, client)
    reads = memory_store.reads
    for _ in range(5):
        await token(http, client)
    assert memory_store.reads == reads
    clock.now += 3  # past the 2 s cache TTL: one fresh read
    await token(http, client)
    assert memory_store.reads == reads + 1


async def test_remembered_requests_keep_no_secret_and_are_still_checked(
    http: httpx.AsyncClient, add_client: Callable[..., Client], memory_store: MemoryStore, app: CredwardApp
) -> None:
    """A repeated request skips parsing, but its secret is still checked against the account's live hashes."""
    oauth = app.components.oauth
    client = add_client()
    assert (await token(http, client)).status_code == 200
    assert (await token(http, client)).status_code == 200
    remembered = list(oauth._parsed.values())
    assert remembered
    assert all(request.credentials.client_secret == "" for request, _ in remembered)
    assert all(client.secret not in repr(value) for value in remembered)
    # The secret is removed (rotation): the very same request is now refused.
    account = memory_store.accounts[client.client_id]
    memory_store.accounts[client.client_id] = replace(account, secrets=())
    oauth.accounts.invalidate(client.client_id)
    assert_error(await token(http, client), 401, "invalid_client")
    # A wrong secret is never remembered.
    before = len(oauth._parsed)
    assert_error(await token(http, Client(client.client_id, client.secret + "x")), 401, "invalid_client")
    assert len(oauth._parsed) == before

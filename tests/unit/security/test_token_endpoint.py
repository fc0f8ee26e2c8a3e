"""The token endpoint in-process (ASGI transport, SQLite store, fake clock): every grant path and RFC error."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from tests.unit.security.security_fixtures import HASH_KEY, ISSUER, Client, FakeClock, asgi

from credward.domain.claims import CLOCK_SKEW_ALLOWANCE
from credward.errors import InvalidClient
from credward.security.app import CredwardApp, Services
from credward.security.service import memo_key
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.unit

WLCG_ANY = "https://wlcg.cern.ch/jwt/v1/any"
FORM = b"application/x-www-form-urlencoded"
AddClient = Callable[..., Awaitable[Client]]


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
    http: httpx.AsyncClient, add_client: AddClient, clock: FakeClock
) -> None:
    client = await add_client()
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
    assert claims["exp"] - claims["iat"] == 300 + CLOCK_SKEW_ALLOWANCE  # iat is backdated
    assert claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) >= 16
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"


async def test_client_secret_post(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client()
    response = await token(http, None, client_id=client.client_id, client_secret=client.secret)
    assert response.status_code == 200, response.text


async def test_two_auth_methods_at_once_is_invalid_request(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client()
    response = await token(http, client, client_secret=client.secret)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "auth",
    [None, ("nobody", "cws_nothing"), "wrong-secret"],
)
async def test_bad_client_is_401_with_www_authenticate(
    http: httpx.AsyncClient, add_client: AddClient, auth: object
) -> None:
    client = await add_client()
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
    http: httpx.AsyncClient, add_client: AddClient, form: dict[str, str], error: str
) -> None:
    client = await add_client()
    response = await http.post("/oauth2/token", data=form, auth=(client.client_id, client.secret))
    assert_error(response, 400, error)


async def test_repeated_parameter_is_invalid_request(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client()
    response = await http.post(
        "/oauth2/token",
        content=b"grant_type=client_credentials&scope=a&scope=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(client.client_id, client.secret),
    )
    assert_error(response, 400, "invalid_request")


async def test_json_body_is_invalid_request(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client()
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
async def test_downscoping(http: httpx.AsyncClient, add_client: AddClient, scope: str, granted: str) -> None:
    response = await token(http, await add_client(), scope=scope)
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
    http: httpx.AsyncClient, add_client: AddClient, scope: str
) -> None:
    assert_error(await token(http, await add_client(), scope=scope), 400, "invalid_scope")


async def test_audience_and_resource(http: httpx.AsyncClient, add_client: AddClient) -> None:
    client = await add_client(audiences=("https://storage.test", "https://other.test"))
    ok = await token(http, client, resource="https://other.test")
    assert ok.status_code == 200
    assert jwt.decode(ok.json()["access_token"], options={"verify_signature": False})["aud"] == "https://other.test"
    both = await token(http, client)
    claims = jwt.decode(both.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == ["https://storage.test", "https://other.test"]
    assert_error(await token(http, client, audience="https://evil.test"), 400, "invalid_target")
    assert_error(await token(http, client, resource="not a uri"), 400, "invalid_target")


async def test_account_without_audiences_gets_the_profile_any(http: httpx.AsyncClient, add_client: AddClient) -> None:
    response = await token(http, await add_client(audiences=()))
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["aud"] == WLCG_ANY


async def test_ttl_is_capped_by_server_and_account_expiry(
    http: httpx.AsyncClient, add_client: AddClient, clock: FakeClock
) -> None:
    assert (await token(http, await add_client(ttl=86400))).json()["expires_in"] == 3600
    soon = datetime.fromtimestamp(clock.now + 42, UTC)
    assert (await token(http, await add_client(expires_at=soon))).json()["expires_in"] == 42


async def test_expired_account_and_expired_secret_are_refused(
    http: httpx.AsyncClient, add_client: AddClient, clock: FakeClock
) -> None:
    past = datetime.fromtimestamp(clock.now - 1, UTC)
    assert_error(await token(http, await add_client(expires_at=past)), 401, "invalid_client")
    assert_error(await token(http, await add_client(not_after=past)), 401, "invalid_client")


async def test_client_throttle_answers_429_but_never_locks_out_the_right_secret(
    http: httpx.AsyncClient, add_client: AddClient, clock: FakeClock
) -> None:
    client = await add_client()
    wrong = Client(client.client_id, "cws_wrong")
    for _ in range(3):
        assert_error(await token(http, wrong), 401, "invalid_client")
    locked = await token(http, wrong)
    assert_error(locked, 429, "temporarily_unavailable")
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert (await token(http, client)).status_code == 200
    clock.now += 61
    assert_error(await token(http, wrong), 401, "invalid_client")


async def test_throttle_per_ip(http: httpx.AsyncClient, add_client: AddClient) -> None:
    for i in range(5):
        assert_error(await token(http, Client(f"guess-{i}", "cws_wrong")), 401, "invalid_client")
    assert_error(await token(http, await add_client()), 429, "temporarily_unavailable")


async def test_account_cache_serves_a_cached_view_until_its_ttl(
    http: httpx.AsyncClient, add_client: AddClient, store: SQLiteStore, clock: FakeClock
) -> None:
    """Within the cache TTL the token endpoint answers from its cached view, without reading the store."""
    client = await add_client()
    assert (await token(http, client)).status_code == 200
    await store.delete_account(client.client_id)  # behind the service's back: nothing invalidates the cache
    assert (await token(http, client)).status_code == 200
    clock.now += 3  # past the 2 s cache TTL: read again, and the account is gone
    assert_error(await token(http, client), 401, "invalid_client")


async def test_remembered_requests_keep_no_secret_and_are_still_checked(
    services: Services, add_client: AddClient, store: SQLiteStore
) -> None:
    """A repeated request skips parsing, but its secret is still checked against the account's live hashes."""
    oauth = services.oauth
    client = await add_client()
    header = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())
    body = b"grant_type=client_credentials"

    async def read() -> bytes:
        return body

    for _ in range(2):
        issued = await oauth.token(FORM, header, "127.0.0.1", read)
        assert issued.expires_in == 300
    remembered = [*oauth._basic.values(), *oauth._forms.values()]
    assert len(remembered) == 2
    assert all(client.secret not in repr(value) for value in remembered)
    # The secret is removed (rotation): the very same request is now refused.
    account = await store.get_account(client.client_id)
    assert account is not None
    await store.put_account(replace(account, secrets=()))
    oauth.accounts.invalidate(client.client_id)
    with pytest.raises(InvalidClient):
        await oauth.token(FORM, header, "127.0.0.1", read)


async def test_wrong_secrets_are_never_remembered(services: Services, add_client: AddClient) -> None:
    oauth = services.oauth
    client = await add_client()
    wrong = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}x".encode())

    async def read() -> bytes:
        return b"grant_type=client_credentials"

    with pytest.raises(InvalidClient):
        await oauth.token(FORM, wrong, "127.0.0.1", read)
    post = f"grant_type=client_credentials&client_id={client.client_id}&client_secret=wrong".encode()

    async def read_post() -> bytes:
        return post

    with pytest.raises(InvalidClient):
        await oauth.token(FORM, None, "127.0.0.1", read_post)
    assert oauth._basic == {}
    assert oauth._forms == {}


def test_memo_keys_are_unambiguous() -> None:
    """A missing header and a header whose value reads ``None`` (or any other split of the bytes) never meet."""
    assert memo_key(HASH_KEY, None, b"x") != memo_key(HASH_KEY, b"None", b"x")
    assert memo_key(HASH_KEY, b"a", b"bc") != memo_key(HASH_KEY, b"ab", b"c")
    assert memo_key(HASH_KEY, b"", b"x") != memo_key(HASH_KEY, None, b"x")
    assert memo_key(HASH_KEY, b"a", b"b") == memo_key(HASH_KEY, b"a", b"b")


async def test_a_remembered_post_request_does_not_answer_an_authorization_none_header(
    http: httpx.AsyncClient, add_client: AddClient
) -> None:
    """The same body with ``Authorization: None`` is a different request: malformed Basic, 401, no token.

    (With the memo keyed by an f-string, ``None`` and a missing header shared a key, so the second request
    got a token once the first had been answered.)
    """
    client = await add_client()
    body = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.secret}
    assert (await http.post("/oauth2/token", data=body)).status_code == 200
    response = await http.post("/oauth2/token", data=body, headers={"Authorization": "None"})
    assert_error(response, 401, "invalid_client")


@pytest.mark.parametrize("secret", ["wrong", None])
async def test_basic_client_is_refused_before_the_body_is_read(
    app: CredwardApp, add_client: AddClient, secret: str | None
) -> None:
    """A wrong Basic secret (or unknown client) is answered without receive(): no body, no ``100 Continue``."""
    client = await add_client()
    user = client.client_id if secret else "nobody"
    header = b"Basic " + base64.b64encode(f"{user}:{secret or client.secret}".encode())
    seen = await asgi(
        app,
        "POST",
        "/oauth2/token",
        headers=((b"authorization", header), (b"content-type", FORM)),
        body=b"grant_type=client_credentials",
    )
    assert seen.status == 401
    assert seen.receives == 0
    good = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())
    ok = await asgi(
        app,
        "POST",
        "/oauth2/token",
        headers=((b"authorization", good), (b"content-type", FORM)),
        body=b"grant_type=client_credentials",
    )
    assert ok.status == 200
    assert ok.receives == 1


@pytest.mark.parametrize("raw", [b"/oauth2%2Ftoken", b"/oauth2/%74oken"])
async def test_percent_encoded_token_path_is_not_the_token_endpoint(
    app: CredwardApp, add_client: AddClient, raw: bytes
) -> None:
    client = await add_client()
    good = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())
    seen = await asgi(
        app,
        "POST",
        "/oauth2/token",  # what a server decodes it to
        raw_path=raw,
        headers=((b"authorization", good), (b"content-type", FORM)),
        body=b"grant_type=client_credentials",
    )
    assert seen.status == 404
    assert b"access_token" not in seen.body

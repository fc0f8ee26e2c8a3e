"""The authorizer's pure parts: refresh margins, the token request, the answer's parsing, and renewal by a fake clock.

The renewal tests hand the authorizer an in-process httpx transport (no socket,
no server) so that the clock, not the network, decides when a token is fetched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from credward.client import ClientCredentialsAuthorizer, ClientSettings, IssuerUnavailable, TokenEndpointError
from credward.client.authorizer import basic_authorization, parse_token_response, refresh_deadline, token_form

pytestmark = pytest.mark.unit

SECRET = "cws_s3cret+/value"
TOKEN_URL = "https://security.example/oauth2/token"


def response(status: int, body: object, content_type: str = "application/json") -> httpx.Response:
    content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return httpx.Response(
        status, content=content, headers={"content-type": content_type}, request=httpx.Request("POST", TOKEN_URL)
    )


@pytest.mark.parametrize(
    ("expires_in", "margin", "due"),
    [
        (300, 60, 240),  # the margin before expiry
        (60, 60, 30),  # never more than half the lifetime early
        (10, 60, 5),
        (300, 0, 300),
    ],
)
def test_refresh_deadline(expires_in: float, margin: float, due: float) -> None:
    assert refresh_deadline(100.0, expires_in, margin) == 100.0 + due


def test_basic_authorization_form_urlencodes_both_parts() -> None:
    header = basic_authorization("id:1", SECRET)
    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]).decode() == "id%3A1:cws_s3cret%2B%2Fvalue"


def test_token_form() -> None:
    assert token_form((), ()) == {"grant_type": "client_credentials"}
    assert token_form(("storage.read:/a", "storage.read:/b"), ("aud1", "aud2")) == {
        "grant_type": "client_credentials",
        "scope": "storage.read:/a storage.read:/b",
        "audience": ["aud1", "aud2"],
    }


def test_parse_success() -> None:
    token = parse_token_response(
        response(200, {"access_token": "abc", "token_type": "Bearer", "expires_in": 300}), 10.0, 60.0, SECRET
    )
    assert (token.value, token.refresh_at, token.expires_at) == ("abc", 250.0, 310.0)
    assert "abc" not in repr(token)
    default = parse_token_response(response(200, {"access_token": "abc", "token_type": "bearer"}), 0.0, 60.0, SECRET)
    assert default.expires_at == 60.0


def test_parse_rfc6749_error_without_the_secret() -> None:
    body = {"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
    with pytest.raises(TokenEndpointError) as refused:
        parse_token_response(response(401, body), 0.0, 60.0, SECRET)
    assert refused.value.error == "invalid_client"
    assert refused.value.status_code == 401
    assert SECRET not in str(refused.value)
    assert "[redacted]" in refused.value.description


@pytest.mark.parametrize(
    "answer",
    [
        response(503, {"error": "temporarily_unavailable"}),
        response(404, b"<html>not found</html>", "text/html"),
        response(200, {"token_type": "Bearer"}),
        response(200, {"access_token": "x", "token_type": "mac"}),
        response(200, b"[]"),
    ],
)
def test_unusable_answers_are_issuer_unavailable(answer: httpx.Response) -> None:
    with pytest.raises(IssuerUnavailable):
        parse_token_response(answer, 0.0, 60.0, SECRET)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def issuing(expires_in: int, seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"access_token": f"token-{len(seen)}", "token_type": "Bearer", "expires_in": expires_in}
        return httpx.Response(200, json=body)

    return handler


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "client-secret"
    path.write_text(SECRET + "\n")
    return path


def authorizer(
    secret_file: Path, clock: Clock, seen: list[httpx.Request], **options: object
) -> ClientCredentialsAuthorizer:
    http = httpx.Client(transport=httpx.MockTransport(issuing(300, seen)))
    settings = ClientSettings(secret_file, client_id="client-1", token_url=TOKEN_URL)
    return ClientCredentialsAuthorizer(settings, http_client=http, clock=clock, **options)  # type: ignore[arg-type]


def test_renewal_follows_the_margin(secret_file: Path) -> None:
    clock, seen = Clock(), list[httpx.Request]()
    auth = authorizer(secret_file, clock, seen, refresh_margin=60.0)
    assert auth.get_token() == "token-1"
    clock.now = 239.9
    assert auth.get_token() == "token-1"
    clock.now = 240.0
    assert auth.get_token() == "token-2"
    assert auth.fetch_count == 2
    request = seen[0]
    assert request.headers["authorization"] == basic_authorization("client-1", SECRET)
    assert parse_qs(request.content.decode()) == {"grant_type": ["client_credentials"]}


def test_invalidate_only_drops_the_named_token(secret_file: Path) -> None:
    clock, seen = Clock(), list[httpx.Request]()
    auth = authorizer(secret_file, clock, seen)
    first = auth.get_token()
    auth.invalidate("some-older-token")
    assert auth.get_token() == first
    auth.invalidate(first)
    assert auth.get_token() != first


def test_httpx_flow_retries_once_after_401(secret_file: Path) -> None:
    clock, seen = Clock(), list[httpx.Request]()
    auth = authorizer(secret_file, clock, seen)
    flow = auth.sync_auth_flow(httpx.Request("GET", "https://rs.example/x"))
    first = next(flow)
    assert first.headers["authorization"] == "Bearer token-1"
    retry = flow.send(httpx.Response(401))
    assert retry.headers["authorization"] == "Bearer token-2"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(401))  # once only
    ok = auth.sync_auth_flow(httpx.Request("GET", "https://rs.example/x"))
    next(ok)
    with pytest.raises(StopIteration):
        ok.send(httpx.Response(403))  # not a token problem: no retry
    assert auth.fetch_count == 2


def test_logs_carry_a_fingerprint_never_the_token_or_secret(
    secret_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from credward.domain.secrets import fingerprint

    clock, seen = Clock(), list[httpx.Request]()
    auth = authorizer(secret_file, clock, seen)
    with caplog.at_level("DEBUG", logger="credward.client"):
        token = auth.get_token()
    assert fingerprint(token) in caplog.text
    assert token not in caplog.text
    assert SECRET not in caplog.text
    assert token not in repr(auth)

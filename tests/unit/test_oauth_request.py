"""Token request parsing: form rules and client authentication methods (RFC 6749 §2.3, §3.2, §4.4)."""

from __future__ import annotations

import base64

import pytest

from credward.domain.oauth import AuthMethod, parse_token_request
from credward.errors import AuthError, InvalidClient, InvalidRequest, InvalidTarget, UnsupportedGrantType

pytestmark = pytest.mark.unit

FORM = "application/x-www-form-urlencoded"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_credentials_are_form_decoded() -> None:
    req = parse_token_request(b"grant_type=client_credentials", FORM, basic("a%3Ab", "s+%2B"))
    assert req.credentials.client_id == "a:b"
    assert req.credentials.client_secret == "s +"
    assert req.credentials.method is AuthMethod.BASIC


def test_post_credentials_and_params() -> None:
    body = (
        b"grant_type=client_credentials&client_id=c&client_secret=s"
        b"&scope=read%3A%2Fx&resource=https%3A%2F%2Fr&audience=a"
    )
    req = parse_token_request(body, FORM + "; charset=UTF-8", None)
    assert req.credentials.method is AuthMethod.POST
    assert req.scope == "read:/x"
    assert req.audiences == ("https://r", "a")


def test_secret_is_not_in_repr() -> None:
    req = parse_token_request(b"grant_type=client_credentials&client_id=c&client_secret=topsecret", FORM, None)
    assert "topsecret" not in repr(req)


@pytest.mark.parametrize(
    ("body", "ctype", "auth", "error"),
    [
        (b"grant_type=client_credentials", "application/json", None, InvalidRequest),
        (b"\xff\xfe", FORM, None, InvalidRequest),
        (b"grant_type=client_credentials&grant_type=client_credentials", FORM, None, InvalidRequest),
        (b"grant_type=authorization_code", FORM, None, UnsupportedGrantType),
        (b"client_id=a", FORM, None, InvalidRequest),
        (b"grant_type=client_credentials", FORM, None, InvalidClient),
        (b"grant_type=client_credentials&client_id=a", FORM, None, InvalidClient),
        (b"grant_type=client_credentials", FORM, "Bearer xyz", InvalidClient),
        (b"grant_type=client_credentials", FORM, "Basic %%%", InvalidClient),
        (b"grant_type=client_credentials", FORM, "Basic " + base64.b64encode(b"nocolon").decode(), InvalidClient),
        (b"grant_type=client_credentials&client_secret=s", FORM, basic("a", "s"), InvalidRequest),
        (b"grant_type=client_credentials&client_id=other", FORM, basic("a", "s"), InvalidRequest),
        (b"grant_type=client_credentials&resource=relative", FORM, basic("a", "s"), InvalidTarget),
        (b"grant_type=client_credentials&resource=http%3A%2F%2F%5B", FORM, basic("a", "s"), InvalidTarget),
        (b"grant_type=client_credentials&resource=https%3A%2F%2Fa%23frag", FORM, basic("a", "s"), InvalidTarget),
        (b"grant_type=client_credentials&" + b"x=1&" * 100, FORM, basic("a", "s"), InvalidRequest),
    ],
)
def test_errors(body: bytes, ctype: str, auth: str | None, error: type[AuthError]) -> None:
    with pytest.raises(error) as info:
        parse_token_request(body, ctype, auth)
    assert type(info.value) is error

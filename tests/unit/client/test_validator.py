"""The validator with static keys (no issuer): each check named, leeway, the cache, revocations, authorization."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from credward.client import Check, InsufficientScope, InvalidToken, TokenValidator, bearer_token
from credward.client.revocations import Revocation, RevocationList, parse_feed

pytestmark = pytest.mark.unit

ISSUER = "https://security.example"
AUDIENCE = "https://storage.example"
KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = {"keys": [{**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "alg": "ES256", "use": "sig"}]}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "client-1@clients.security.example",
        "aud": AUDIENCE,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 300,
        "jti": "j1",
        "client_id": "client-1",
        "scope": "storage.read:/data storage.modify:/data/out",
        "roles": ["reader"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(body: dict[str, Any], kid: str | None = "k1", key: Any = KEY, alg: str = "ES256") -> str:
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def validator(**options: Any) -> TokenValidator:
    return TokenValidator(ISSUER, audience=AUDIENCE, jwks=JWKS, **options)


def check_of(v: TokenValidator, token: str) -> Check:
    with pytest.raises(InvalidToken) as refused:
        v.verify(token)
    return refused.value.check


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"exp": -40}, Check.EXPIRED),  # times are offsets from now, applied when the test runs
        ({"nbf": 60}, Check.NOT_YET_VALID),
        ({"iat": 60}, Check.ISSUED_AT),
        ({"aud": "https://other.example"}, Check.AUDIENCE),
        ({"aud": None}, Check.REQUIRED_CLAIM),
        ({"iss": "https://evil.example"}, Check.ISSUER),
        ({"sub": None}, Check.REQUIRED_CLAIM),
        ({"exp": None}, Check.REQUIRED_CLAIM),
    ],
)
def test_each_claim_check_is_named(changes: dict[str, Any], check: Check) -> None:
    now = int(time.time())
    timed = {k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v for k, v in changes.items()}
    assert check_of(validator(), sign(claims(**timed))) is check


def test_key_and_algorithm_checks() -> None:
    v = validator()
    assert check_of(v, sign(claims(), kid="unknown")) is Check.KEY
    assert check_of(v, sign(claims(), key=ec.generate_private_key(ec.SECP256R1()))) is Check.SIGNATURE
    assert check_of(v, sign(claims(), key="k" * 32, alg="HS256")) is Check.ALGORITHM
    assert check_of(v, sign(claims(), key=ec.generate_private_key(ec.SECP384R1()), alg="ES384")) is Check.ALGORITHM
    assert check_of(v, "a.b") is Check.FORMAT
    assert v.verify(sign(claims(), kid=None)).subject  # no kid: fine while one key is published


def test_leeway() -> None:
    late = sign(claims(exp=int(time.time()) - 10))
    assert validator(leeway=30).verify(late).subject
    assert check_of(validator(leeway=0), late) is Check.EXPIRED


def test_messages_name_the_check() -> None:
    with pytest.raises(InvalidToken, match=r"token refused \(exp\)"):
        validator(leeway=0).verify(sign(claims(exp=int(time.time()) - 5)))


def test_cached_until_exp_plus_leeway() -> None:
    clock = Clock()
    v = validator(clock=clock, leeway=30)
    body = claims()
    token = sign(body)
    first = v.verify(token)
    assert v.verify(token) is first  # a dictionary lookup, not a second verification
    clock.now = body["exp"] + 29.9
    assert v.verify(token) is first
    clock.now = body["exp"] + 30.0
    assert v.verify(token) is not first  # the entry died; verified again (PyJWT's clock says it is valid)


def test_cache_is_bounded() -> None:
    v = validator(cache_size=5)
    for n in range(20):
        v.verify(sign(claims(jti=f"j{n}")))
    assert v.cached_tokens == 5


def test_revocation_drops_cached_tokens() -> None:
    v = validator()
    token = sign(claims(jti="revoke-me"))
    v.verify(token)
    feed = {
        "events": [
            {
                "cursor": 7,
                "kind": "token",
                "subject": "revoke-me",
                "client_id": "client-1",
                "revoked_at": "2026-01-01T00:00:00+00:00",
                "expires_at": None,
            }
        ],
        "cursor": 7,
    }
    answer = httpx.Response(200, json=feed, request=httpx.Request("GET", ISSUER + "/v1/revocations"))
    v.poll_revocations(http=httpx.Client(transport=httpx.MockTransport(lambda request: answer)))
    assert check_of(v, token) is Check.REVOKED
    assert v.verify(sign(claims(jti="other"))).subject


def test_revocation_list() -> None:
    revoked = RevocationList()
    assert not revoked
    now = time.time()
    revoked.apply([Revocation(1, "account", "c1", "c1", now, None)], 1)
    assert revoked.cursor == 1
    assert revoked.is_revoked({"client_id": "c1", "iat": int(now) - 5})
    assert not revoked.is_revoked({"client_id": "c1", "iat": int(now) + 5})  # issued after: a new grant
    assert not revoked.is_revoked({"client_id": "c2", "iat": 0})
    revoked.forget_expired(now + 10, max_token_lifetime=5)
    assert not revoked


def test_parse_feed_skips_malformed_events() -> None:
    body = {
        "events": [
            {"cursor": "x"},
            {"cursor": 2, "kind": "token", "subject": "j", "client_id": "c", "revoked_at": "2026-01-01T00:00:00+00:00"},
        ],
        "cursor": 2,
    }
    events, cursor = parse_feed(httpx.Response(200, json=body, request=httpx.Request("GET", ISSUER)))
    assert cursor == 2
    assert [e.subject for e in events] == ["j"]


def test_require_and_require_role() -> None:
    token = validator().verify(sign(claims()))
    assert token.require("read", ("data", "x")).scope == "storage.read:/data"
    assert token.allows("write", "/data/out/1")
    assert not token.allows("write", "/data/in")
    with pytest.raises(InsufficientScope) as bad_path:
        token.require("read", "/data/*")
    assert bad_path.value.check is Check.SCOPE
    assert "invalid path" in str(bad_path.value)
    with pytest.raises(InsufficientScope) as no_role:
        token.require_role("admin")
    assert no_role.value.check is Check.ROLE
    with pytest.raises(ValueError, match="verb"):
        token.require("grant", "/data")


def test_a_token_without_scope_grants_no_path() -> None:
    token = validator().verify(sign(claims(scope=None)))
    assert token.grants == ()
    assert token.require_role("reader") == "reader"


def test_any_audience_is_opt_in() -> None:
    anyone = sign(claims(aud="https://wlcg.cern.ch/jwt/v1/any"))
    assert check_of(validator(), anyone) is Check.AUDIENCE
    assert validator(accept_any_audience=True).verify(anyone).subject


def test_symmetric_algorithms_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        TokenValidator(ISSUER, audience=AUDIENCE, jwks=JWKS, algorithms=["HS256"])


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer a b"])
def test_bearer_token_refuses_other_headers(header: str | None) -> None:
    with pytest.raises(InvalidToken) as refused:
        bearer_token(header)
    assert refused.value.check is Check.FORMAT


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc ") == "abc"


def test_the_revocation_cursor_follows_the_service_after_its_store_was_replaced() -> None:
    revoked = RevocationList()
    revoked.apply([Revocation(900, "token", "j-old", "c1", 1.0, None)], 900)
    # The service answered from the start of a new store: its cursor is the one to ask from next time.
    revoked.apply([Revocation(1, "token", "j-new", "c2", 2.0, None)], 1)
    assert revoked.cursor == 1
    assert revoked.is_revoked({"jti": "j-new", "client_id": "c2", "iat": 0})
    assert revoked.is_revoked({"jti": "j-old", "client_id": "c1", "iat": 0})

"""``credward.client.TokenValidator`` against the real security service: discovery, JWKS, checks, the feed.

SQLite only: the validator reads the service's published keys and feed, not its store.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration.conftest import sqlite_url
from tests.integration.security.conftest import Registered, Service, StartService
from tests.integration.security.test_client_support import wait_until_revoked

from credward.client import Check, InsufficientScope, InvalidToken, IssuerUnavailable, TokenValidator
from credward.domain.scopes import ScopeProfile
from credward.security.keys import generate_key, key_to_pem
from credward.security.settings import SigningAlgorithm

pytestmark = pytest.mark.integration

AUDIENCE = "https://storage.example"


@pytest.fixture(scope="module")
def backend_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_url(tmp_path_factory.mktemp("validator-store") / "store.db")


def token_of(service: Service, client: Registered | None = None, **form: str) -> str:
    response = service.token(client or service.register(), **form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def refused(validator: TokenValidator, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        validator.verify(token)
    return info.value


def kids(service: Service) -> list[str]:
    return [k["kid"] for k in httpx.get(service.base_url + "/jwks.json").json()["keys"]]


def forged(kid: str, claims: dict[str, Any]) -> str:
    """A token signed by a key the issuer never published."""
    return jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": kid})


def test_verify_then_authorize_by_the_prefix_rule(service: Service) -> None:
    token = token_of(service)
    with TokenValidator(service.base_url, audience=AUDIENCE) as validator:
        verified = validator.verify(token)
        assert verified.claims["iss"] == service.base_url
        assert verified.roles == {"reader"}
        assert verified.require("read", "/data").scope == "storage.read:/data"
        assert verified.require("read", "/data/x/y").scope == "storage.read:/data"
        assert verified.require("write", "/data/out/run-1").scope == "storage.modify:/data/out"
        for verb, path in [("write", "/data/x"), ("read", "/database"), ("read", "/"), ("read", "/data/../etc")]:
            with pytest.raises(InsufficientScope) as denied:
                verified.require(verb, path)
            assert denied.value.check is Check.SCOPE
        with pytest.raises(InsufficientScope) as write_denied:
            verified.require("write", "/data/x")
        assert "may not write /data/x" in str(write_denied.value)
        assert "storage.read:/data storage.modify:/data/out" in str(write_denied.value)
        assert verified.require_role("admin", "reader") == "reader"
        with pytest.raises(InsufficientScope) as no_role:
            verified.require_role("admin")
        assert no_role.value.check is Check.ROLE
        assert "admin" in str(no_role.value)
        # seen again: the cache answers, no new key fetch
        assert validator.verify(token) is verified
        assert validator.cached_tokens == 1
        assert validator.jwks_fetches == 1


def test_scitokens_profile(start_service: StartService) -> None:
    service = start_service(scope_profile="scitokens")
    token = token_of(service)
    with TokenValidator(service.base_url, audience=AUDIENCE) as both:
        verified = both.verify(token)
        assert verified.require("read", "/data/x").scope == "read:/data"
        assert verified.require("write", "/data/out/x").scope == "write:/data/out"
        assert verified.claims["ver"] == "scitoken:2.0"
    with TokenValidator(service.base_url, audience=AUDIENCE, profiles=[ScopeProfile.WLCG]) as wlcg_only:
        assert not wlcg_only.verify(token).allows("read", "/data/x")


def test_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(start_service: StartService) -> None:
    service = start_service()
    interval = 1.0
    validator = TokenValidator(service.base_url, audience=AUDIENCE, jwks_min_refresh_interval=interval)
    first_kid = kids(service)[0]
    validator.verify(token_of(service))
    fetched = time.monotonic()
    assert validator.jwks_fetches == 1
    # rotate by files: next.pem is published, then becomes current
    (service.keys_dir / "next.pem").write_bytes(key_to_pem(generate_key(SigningAlgorithm.ES256)))
    (service.keys_dir / "current.pem").rename(service.keys_dir / "previous.pem")
    (service.keys_dir / "next.pem").rename(service.keys_dir / "current.pem")
    deadline = time.monotonic() + 10
    while jwt.get_unverified_header(new := token_of(service))["kid"] == first_kid:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(max(0.0, fetched + interval + 0.1 - time.monotonic()))
    assert validator.verify(new).claims["iss"] == service.base_url  # the unknown kid made it refetch
    assert validator.jwks_fetches == 2
    claims = jwt.decode(new, options={"verify_signature": False})
    for n in range(20):  # a stream of forged kids within the interval costs the issuer nothing
        assert refused(validator, forged(f"forged-{n}", claims)).check is Check.KEY
    assert validator.jwks_fetches == 2
    # a known kid with a foreign key fails the signature, without any fetch
    assert refused(validator, forged(jwt.get_unverified_header(new)["kid"], claims)).check is Check.SIGNATURE
    time.sleep(interval + 0.1)
    assert refused(validator, forged("forged-late", claims)).check is Check.KEY
    assert validator.jwks_fetches == 3  # one more fetch once the interval has passed, then none
    assert refused(validator, forged("forged-later", claims)).check is Check.KEY
    assert validator.jwks_fetches == 3
    validator.close()


def test_async_verify_fetches_keys_without_blocking(service: Service) -> None:
    token = token_of(service)

    async def main(validator: TokenValidator) -> list[str]:
        results = await asyncio.gather(*(validator.averify(token) for _ in range(10)))
        return [r.subject for r in results]

    with TokenValidator(service.base_url, audience=AUDIENCE) as validator:
        subjects = asyncio.run(main(validator))
        assert len(set(subjects)) == 1
        assert validator.jwks_fetches == 1


def test_expired_token_is_refused_and_its_cache_entry_dies(service: Service) -> None:
    token = token_of(service, service.register(ttl=1))
    with TokenValidator(service.base_url, audience=AUDIENCE, leeway=0) as validator:
        assert validator.verify(token).subject
        assert validator.cached_tokens == 1
        exp = int(jwt.decode(token, options={"verify_signature": False})["exp"])
        time.sleep(max(0.0, exp - time.time()) + 0.2)
        failure = refused(validator, token)
    assert failure.check is Check.EXPIRED
    assert "(exp)" in str(failure)


def test_wrong_audience_and_wrong_issuer_name_their_check(service: Service) -> None:
    token = token_of(service)
    with TokenValidator(service.base_url, audience="https://other.example") as other_audience:
        assert refused(other_audience, token).check is Check.AUDIENCE
    with TokenValidator(
        "https://not-this-issuer.example", audience=AUDIENCE, jwks_uri=service.base_url + "/jwks.json"
    ) as other_issuer:
        assert refused(other_issuer, token).check is Check.ISSUER
    # discovery of an issuer that publishes another name is refused before any key is trusted
    with (
        TokenValidator(
            "https://not-this-issuer.example", audience=AUDIENCE, base_url=service.base_url
        ) as wrong_discovery,
        pytest.raises(IssuerUnavailable) as unavailable,
    ):
        wrong_discovery.verify(token)
    assert "expected 'https://not-this-issuer.example'" in str(unavailable.value)
    with TokenValidator(service.base_url, audience=None) as no_audience:
        assert no_audience.verify(token).claims["aud"] == AUDIENCE


def test_malformed_tampered_and_wrong_algorithm(service: Service) -> None:
    token = token_of(service)
    header, _payload, signature = token.split(".")
    other_payload = token_of(service).split(".")[1]
    with TokenValidator(service.base_url, audience=AUDIENCE) as validator:
        assert refused(validator, f"{header}.{other_payload}.{signature}").check is Check.SIGNATURE
        assert refused(validator, "not-a-jwt").check is Check.FORMAT
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token)["kid"]
        unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": kid})
        assert refused(validator, unsigned).check is Check.ALGORITHM
        hmac = jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": kid})
        assert refused(validator, hmac).check is Check.ALGORITHM


def test_revocation_feed_refuses_revoked_tokens_and_accounts(service: Service) -> None:
    client = service.register()
    token, other = token_of(service, client), token_of(service, client)
    with TokenValidator(service.base_url, audience=AUDIENCE) as validator:
        validator.follow_revocations(wait=1.0)
        validator.verify(token)
        validator.verify(other)
        revoke = httpx.post(
            service.base_url + "/oauth2/revoke", data={"token": token}, auth=(client.client_id, client.secret)
        )
        assert revoke.status_code == 200
        wait_until_revoked(validator, token)  # even though it was cached
        assert validator.verify(other).subject  # only that token
        with service.http() as http:
            r = http.post(f"/v1/admin/accounts/{client.client_id}/revoke", headers=service.admin_headers())
        assert r.status_code == 200, r.text
        wait_until_revoked(validator, other)


def test_a_withdrawn_key_stops_verifying_once_the_keys_are_stale(start_service: StartService) -> None:
    service = start_service()
    old_kid = kids(service)[0]
    validator = TokenValidator(service.base_url, audience=AUDIENCE, jwks_max_age=0.5, jwks_min_refresh_interval=0.5)
    validator.verify(token_of(service))
    signed_by_old = token_of(service)  # not yet seen by the validator
    # emergency rotation: a new current key, the old one withdrawn at once
    (service.keys_dir / "current.pem").write_bytes(key_to_pem(generate_key(SigningAlgorithm.ES256)))
    deadline = time.monotonic() + 10
    while old_kid in kids(service):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.6)  # the validator's keys are now older than jwks_max_age
    failure = refused(validator, signed_by_old)
    assert failure.check is Check.KEY
    assert validator.jwks_fetches == 2
    assert validator.verify(token_of(service)).subject  # the new key verifies without another fetch
    assert validator.jwks_fetches == 2
    validator.close()

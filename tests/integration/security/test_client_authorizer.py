"""``credward.client.ClientCredentialsAuthorizer`` against the real security service over HTTP.

The client does not depend on the service's store, so these run on SQLite only
(``backend_url`` below replaces the per-backend fixture of the conftest).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
import requests
from authlib.integrations.httpx_client import OAuth2Client
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session
from tests.integration.conftest import sqlite_url
from tests.integration.security.conftest import Registered, Service
from tests.integration.security.test_client_support import (
    REFUSE_ALL,
    KubeletMount,
    issued_jtis,
    resource_server,
    secret_values,
    wait_until_revoked,
)

from credward.client import ClientCredentialsAuthorizer, TokenEndpointError, TokenValidator
from credward.domain.secrets import hash_secret, new_client_secret, new_secret_id

pytestmark = pytest.mark.integration

AUDIENCE = "https://storage.example"


@pytest.fixture(scope="module")
def backend_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_url(tmp_path_factory.mktemp("client-store") / "store.db")


def mounted(service: Service, client: Registered, tmp_path: Path) -> KubeletMount:
    return KubeletMount(tmp_path / "credentials", secret_values(service, client))


def authorizer_for(mount: KubeletMount, **options: object) -> ClientCredentialsAuthorizer:
    """As a pod would build it: only CLIENT_SECRET_PATH (the client id and token URL come from the mount)."""
    return ClientCredentialsAuthorizer.from_env({"CLIENT_SECRET_PATH": str(mount.secret_path)}, **options)


def validator_for(service: Service, **options: object) -> TokenValidator:
    return TokenValidator(service.base_url, audience=AUDIENCE, **options)  # type: ignore[arg-type]


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def revoke(service: Service, client: Registered, token: str) -> httpx.Response:
    """RFC 7009 revocation of one token by its own client."""
    url = service.base_url + "/oauth2/revoke"
    return httpx.post(url, data={"token": token}, auth=(client.client_id, client.secret))


def wait_for_audit(service: Service, client_id: str, count: int) -> list[str]:
    """The audit log is flushed in batches (50 ms): wait until ``count`` issuances show."""
    deadline = time.monotonic() + 5
    while len(jtis := issued_jtis(service, client_id)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return jtis


def test_token_from_the_environment_and_discovery(service: Service, tmp_path: Path) -> None:
    """CLIENT_ID + CLIENT_SECRET_PATH + SECURITY_BASE_URL, no token-url file: discovery finds the endpoint."""
    client = service.register()
    secret = tmp_path / "client-secret"
    secret.write_text(client.secret + "\n")
    env = {"CLIENT_ID": client.client_id, "CLIENT_SECRET_PATH": str(secret), "SECURITY_BASE_URL": service.base_url}
    with ClientCredentialsAuthorizer.from_env(env) as auth:
        token = auth.get_token()
        assert auth.get_token() == token
        assert auth.fetch_count == 1
    claims = claims_of(token)
    assert claims["client_id"] == client.client_id
    assert claims["aud"] == AUDIENCE
    assert claims["scope"] == "storage.read:/data storage.modify:/data/out"
    assert token not in repr(auth)


def test_scope_and_audience_are_requested(service: Service, tmp_path: Path) -> None:
    client = service.register(audiences=(AUDIENCE, "https://other.example"))
    with authorizer_for(mounted(service, client, tmp_path), scope="storage.read:/data/x", audience=AUDIENCE) as auth:
        claims = claims_of(auth.get_token())
    assert claims["scope"] == "storage.read:/data/x"
    assert claims["aud"] == AUDIENCE


def test_token_endpoint_error_is_typed_and_has_no_secret(service: Service, tmp_path: Path) -> None:
    client = service.register()
    wrong = Registered(client.client_id, new_client_secret(), client.secret_id)
    mount = KubeletMount(tmp_path / "credentials", secret_values(service, wrong))
    with authorizer_for(mount) as auth, pytest.raises(TokenEndpointError) as refused:
        auth.get_token()
    assert refused.value.error == "invalid_client"
    assert refused.value.status_code == 401
    assert wrong.secret not in str(refused.value)
    assert wrong.secret not in repr(refused.value.args)
    scoped_auth = authorizer_for(mounted(service, client, tmp_path / "b"), scope="storage.read:/elsewhere")
    with scoped_auth, pytest.raises(TokenEndpointError) as scoped:
        scoped_auth.get_token()
    assert scoped.value.error == "invalid_scope"


def test_kubelet_data_swap_is_picked_up(service: Service, tmp_path: Path) -> None:
    """Rotation as the operator does it: add the new secret, swap the mount, retire the old secret."""
    client = service.register()
    mount = mounted(service, client, tmp_path)
    with authorizer_for(mount) as auth:
        first = auth.get_token()
        new_secret, new_id = new_client_secret(), new_secret_id()
        service.secrets_seen.append(new_secret)
        both = [
            {"id": client.secret_id, "hash": hash_secret(service.hash_key, client.secret)},
            {"id": new_id, "hash": hash_secret(service.hash_key, new_secret)},
        ]
        assert service.put_account(client.client_id, {"audiences": [AUDIENCE], "secrets": both}).status_code == 200
        mount.update(secret_values(service, client, new_secret))
        assert (mount.root / "client-secret").read_text() == new_secret  # the path now reads the new file
        only_new = [both[1]]
        assert service.put_account(client.client_id, {"audiences": [AUDIENCE], "secrets": only_new}).status_code == 200
        # the old secret no longer works, so a successful fetch proves the new file was read
        old = service.token(client)
        assert old.status_code == 401
        auth.invalidate()
        second = auth.get_token()
        assert second != first
        assert auth.fetch_count == 2
    assert claims_of(second)["client_id"] == client.client_id


def test_refresh_before_expiry(service: Service, tmp_path: Path) -> None:
    """A 4 s token with a 2 s margin is replaced after 2 s, while it is still valid."""
    client = service.register(ttl=4)
    with authorizer_for(mounted(service, client, tmp_path), refresh_margin=2.0) as auth:
        first = auth.get_token()
        assert auth.get_token() == first
        time.sleep(2.2)
        second = auth.get_token()
        assert second != first
        assert auth.fetch_count == 2
    assert int(str(claims_of(first)["exp"])) > time.time()  # the first one had not expired yet


def test_401_drops_the_token_and_retries_once(service: Service, tmp_path: Path) -> None:
    """A resource server following the revocation feed refuses a revoked token; the authorizer gets a new one."""
    client = service.register()
    validator = validator_for(service)
    validator.follow_revocations(wait=1.0)
    with resource_server(validator) as rs, authorizer_for(mounted(service, client, tmp_path)) as auth:
        with httpx.Client(auth=auth) as http:
            assert http.get(rs.url + "/data/a").status_code == 200
            revoked = auth.get_token()
            r = httpx.post(
                service.base_url + "/oauth2/revoke", data={"token": revoked}, auth=(client.client_id, client.secret)
            )
            assert r.status_code == 200
            wait_until_revoked(validator, revoked)
            response = http.post(rs.url + "/data/a", content=b"payload")
            assert response.status_code == 200, response.text
            assert response.json()["body"] == "payload"  # the retried request carried its body again
            assert [h.status_code for h in response.history] == [401]
            assert auth.get_token() != revoked
            assert auth.fetch_count == 2
            assert http.get(rs.url + "/elsewhere").status_code == 403  # a 403 is an answer, not a reason to retry
            assert auth.fetch_count == 2
            # a resource server that refuses every token gets exactly one retry, no loop
            refused = http.get(rs.url + REFUSE_ALL)
            assert refused.status_code == 401
            assert [h.status_code for h in refused.history] == [401]
            assert auth.fetch_count == 3
        assert len(wait_for_audit(service, client.client_id, 3)) == 3


def test_requests_auth_with_retry(service: Service, tmp_path: Path) -> None:
    client = service.register()
    validator = validator_for(service)
    validator.follow_revocations(wait=1.0)
    with resource_server(validator) as rs, authorizer_for(mounted(service, client, tmp_path)) as auth:
        session = requests.Session()
        session.auth = auth
        assert session.get(rs.url + "/data/a").status_code == 200
        revoked = auth.get_token()
        assert revoke(service, client, revoked).status_code == 200
        wait_until_revoked(validator, revoked)
        response = session.post(rs.url + "/data/b", data=b"again")
        assert response.status_code == 200, response.text
        assert response.json()["body"] == "again"
        assert [h.status_code for h in response.history] == [401]
        assert auth.fetch_count == 2
        session.close()


def test_threads_share_one_fetch(service: Service, tmp_path: Path) -> None:
    client = service.register()
    with authorizer_for(mounted(service, client, tmp_path)) as auth:
        barrier = threading.Barrier(16)
        tokens: list[str] = []

        def worker() -> None:
            barrier.wait()
            tokens.append(auth.get_token())

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(tokens)) == 1
        assert len(tokens) == 16
        assert auth.fetch_count == 1
    time.sleep(0.2)
    assert len(wait_for_audit(service, client.client_id, 1)) == 1


def test_tasks_share_one_fetch(service: Service, tmp_path: Path) -> None:
    client = service.register()
    validator = validator_for(service)

    async def main(auth: ClientCredentialsAuthorizer, url: str) -> list[int]:
        tokens = await asyncio.gather(*(auth.aget_token() for _ in range(50)))
        assert len(set(tokens)) == 1
        async with httpx.AsyncClient(auth=auth) as http:
            responses = await asyncio.gather(*(http.get(url + "/data/x") for _ in range(20)))
        return [r.status_code for r in responses]

    with resource_server(validator) as rs, authorizer_for(mounted(service, client, tmp_path)) as auth:
        assert asyncio.run(main(auth, rs.url)) == [200] * 20
        assert auth.fetch_count == 1
        assert asyncio.run(main(auth, rs.url)) == [200] * 20  # a second event loop reuses the token
        assert auth.fetch_count == 1
    time.sleep(0.2)
    assert len(wait_for_audit(service, client.client_id, 1)) == 1


@contextmanager
def oauthlib_over_loopback_http() -> Iterator[None]:
    """oauthlib refuses plain http unless its documented OAUTHLIB_INSECURE_TRANSPORT switch is set."""
    before = os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["OAUTHLIB_INSECURE_TRANSPORT"]
        else:
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = before


def test_authlib_and_requests_oauthlib_fetch_tokens_that_pyjwkclient_verifies(service: Service) -> None:
    """Two standard OAuth2 client libraries, unmodified; PyJWT's PyJWKClient and the validator verify the tokens."""
    client = service.register()
    with OAuth2Client(client.client_id, client.secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        from_authlib = oauth.fetch_token(service.token_url, grant_type="client_credentials")["access_token"]
    with oauthlib_over_loopback_http():
        session = OAuth2Session(client=BackendApplicationClient(client_id=client.client_id))
        from_oauthlib = session.fetch_token(
            service.token_url, auth=requests.auth.HTTPBasicAuth(client.client_id, client.secret)
        )["access_token"]
    jwks = jwt.PyJWKClient(service.base_url + "/jwks.json")
    validator = validator_for(service)
    for token in (from_authlib, from_oauthlib):
        key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=service.base_url)
        assert claims["client_id"] == client.client_id
        assert validator.verify(token).require("read", "/data/x").scope == "storage.read:/data"
    validator.close()

"""Signing keys (reload, rotation, dev-mode persistence, algorithms) and admin API authentication over real HTTP.

TokenReview is checked against the real local kube-apiserver: ServiceAccounts are
created through the API and their tokens come from the TokenRequest API.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from tests.integration.conftest import sqlite_url
from tests.integration.security.conftest import Service, StartService, starter, stop_service

from credward.api.admin import ServiceInfo
from credward.devcluster import ControlPlane
from credward.domain.secrets import hash_key_id, new_client_id
from credward.security.keys import generate_key, key_to_pem
from credward.security.settings import SigningAlgorithm

pytestmark = pytest.mark.integration


def kids(service: Service) -> list[str]:
    return [k["kid"] for k in httpx.get(service.base_url + "/jwks.json").json()["keys"]]


def token_kid(service: Service) -> str:
    client = service.register()
    token = service.token(client).json()["access_token"]
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_key_rotation_by_files(start_service: StartService) -> None:
    """next.pem is published before it signs; after the swap the old key stays published as previous.pem."""
    service = start_service()
    first = token_kid(service)
    assert kids(service) == [first]
    (service.keys_dir / "next.pem").write_bytes(key_to_pem(generate_key(SigningAlgorithm.ES256)))
    wait_for(lambda: len(kids(service)) == 2)
    assert token_kid(service) == first
    second = next(k for k in kids(service) if k != first)
    (service.keys_dir / "current.pem").rename(service.keys_dir / "previous.pem")
    (service.keys_dir / "next.pem").rename(service.keys_dir / "current.pem")
    wait_for(lambda: token_kid(service) == second)
    assert set(kids(service)) == {first, second}


def test_broken_key_file_keeps_the_old_keys(start_service: StartService) -> None:
    service = start_service()
    before = kids(service)
    (service.keys_dir / "next.pem").write_text("not a key")
    time.sleep(0.6)
    assert kids(service) == before
    assert service.token(service.register()).status_code == 200
    assert "keeping the previous signing keys" in service.logs()


def test_dev_mode_key_survives_a_restart(start_service: StartService, tmp_path: Path) -> None:
    keys = tmp_path / "persisted-keys"
    first = start_service(keys_dir=keys)
    kid = kids(first)
    first.process.terminate()
    first.process.wait(timeout=10)
    assert kids(start_service(keys_dir=keys)) == kid


@pytest.mark.parametrize(("alg", "kty"), [("RS256", "RSA"), ("EdDSA", "OKP")])
def test_other_signing_algorithms(start_service: StartService, alg: str, kty: str) -> None:
    service = start_service(signing_alg=alg)
    jwks = httpx.get(service.base_url + "/jwks.json").json()
    assert jwks["keys"][0]["kty"] == kty
    token = service.token(service.register()).json()["access_token"]
    key = jwt.PyJWKClient(service.base_url + "/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=[alg], issuer=service.base_url, options={"verify_aud": False})
    assert jwt.get_unverified_header(token)["alg"] == alg
    assert claims["iss"] == service.base_url


def test_scitokens_profile(start_service: StartService) -> None:
    service = start_service(scope_profile="scitokens")
    client = service.register()
    response = service.token(client, scope="read:/data/x")
    assert response.json()["scope"] == "read:/data/x"
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["ver"] == "scitoken:2.0"
    assert service.token(client).json()["scope"] == "read:/data write:/data/out"


def test_bearer_file_admin_auth(service: Service) -> None:
    url = f"{service.base_url}/v1/admin/accounts/{new_client_id()}"
    missing = httpx.put(url, json={})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.put(url, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.put(url, json={}, headers={"Authorization": "Basic abc"}).status_code == 401
    assert httpx.put(url, json={}, headers=service.admin_headers()).status_code == 201


@pytest.fixture
def service_accounts(control_plane: ControlPlane) -> tuple[str, str, str]:
    """A fresh namespace with two ServiceAccounts; returns (namespace, allowed token, other token)."""
    ns = f"sec-{new_client_id()[:8]}"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "serviceaccount", "operator", "-n", ns)
    control_plane.kubectl("create", "serviceaccount", "intruder", "-n", ns)
    allowed = control_plane.kubectl("create", "token", "operator", "-n", ns).stdout.strip()
    other = control_plane.kubectl("create", "token", "intruder", "-n", ns).stdout.strip()
    return ns, allowed, other


def test_tokenreview_admin_auth_against_the_real_apiserver(
    start_service: StartService, control_plane: ControlPlane, service_accounts: tuple[str, str, str]
) -> None:
    ns, allowed, other = service_accounts
    service = start_service(
        admin_auth="tokenreview",
        admin_allow=f"system:serviceaccount:{ns}:operator",
        kubeconfig=str(control_plane.kubeconfig),
    )
    url = f"{service.base_url}/v1/admin/accounts/{new_client_id()}"
    body = {"displayName": "via tokenreview"}
    assert httpx.put(url, json=body).status_code == 401
    assert httpx.put(url, json=body, headers={"Authorization": "Bearer not-a-kubernetes-token"}).status_code == 401
    forbidden = httpx.put(url, json=body, headers={"Authorization": f"Bearer {other}"})
    assert forbidden.status_code == 403
    assert f"system:serviceaccount:{ns}:intruder" in forbidden.json()["error_description"]
    created = httpx.put(url, json=body, headers={"Authorization": f"Bearer {allowed}"})
    assert created.status_code == 201, created.text
    assert json.loads(created.text)["displayName"] == "via tokenreview"


def test_admin_info_over_http(service: Service) -> None:
    url = service.base_url + "/v1/admin/info"
    assert httpx.get(url).status_code == 401
    before = ServiceInfo.model_validate(httpx.get(url, headers=service.admin_headers()).json())
    service.register()
    after = ServiceInfo.model_validate(httpx.get(url, headers=service.admin_headers()).json())
    assert after.store_id == before.store_id
    assert after.accounts == before.accounts + 1
    assert after.hash_key_id == hash_key_id(service.hash_key)
    assert after.max_token_ttl_seconds == 3600


def test_a_wiped_sqlite_store_gets_a_new_store_id(tmp_path: Path) -> None:
    """How the operator notices a reset store: the id it saw before is gone, and so are the accounts."""
    started: list[Service] = []
    db = tmp_path / "wiped" / "store.db"
    try:
        first = starter(tmp_path / "a", sqlite_url(db), started)()
        first.register()
        before = ServiceInfo.model_validate(
            httpx.get(first.base_url + "/v1/admin/info", headers=first.admin_headers()).json()
        )
        assert before.accounts == 1
        first.process.terminate()
        first.process.wait(timeout=10)
        again = starter(tmp_path / "b", sqlite_url(db), started)()
        same = httpx.get(again.base_url + "/v1/admin/info", headers=again.admin_headers()).json()
        assert same["storeId"] == before.store_id  # a restart keeps the store
        again.process.terminate()
        again.process.wait(timeout=10)
        for leftover in db.parent.iterdir():
            leftover.unlink()
        wiped = starter(tmp_path / "c", sqlite_url(db), started)()
        after = ServiceInfo.model_validate(
            httpx.get(wiped.base_url + "/v1/admin/info", headers=wiped.admin_headers()).json()
        )
    finally:
        for s in started:
            stop_service(s)
    assert after.store_id != before.store_id
    assert after.accounts == 0

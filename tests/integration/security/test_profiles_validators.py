"""Tokens from the real service, over HTTP, accepted by each profile's unmodified reference validator.

The account's permissions go in through the admin API as a RoleBinding would write them (a trailing
``*`` included) and come out as the profile's scopes; the validators get the issuer's public key from the
service's JWKS, found through discovery:

* WLCG 1.0 (the default profile): scitokens-cpp, run in a child process so that its key cache lives in
  a directory of this test (it takes the location from ``XDG_CACHE_HOME`` only);
* SciTokens 2.0: the ``scitokens`` package, with its cache pointed at this test's directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import scitokens
from cryptography.hazmat.primitives import serialization
from tests.integration.security.conftest import Registered, Service, StartService
from tests.unit.test_claims import SCITOKENS_2_0, WLCG_1_0, ScitokensCpp, load_scitokens_cpp, scitokens_cache_in

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
AUDIENCE = "https://storage.example"
PERMISSIONS = [
    {"verbs": ["read"], "path": ["store", "artifacts", "*"]},
    {"verbs": ["read", "write"], "path": ["store", "builds"]},
]


def public_key(service: Service, token: str) -> tuple[str, bytes]:
    """(kid, PEM) of the key that signed ``token``, from the JWKS that discovery names."""
    config = httpx.get(service.base_url + "/.well-known/openid-configuration").json()
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    pem = key.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(key.key_id), pem


def granted(service: Service, client: Registered) -> dict[str, Any]:
    response = service.token(client)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_roles_only(service: Service, client: Registered) -> None:
    """Replace the account's mappings by one that gives a role and no permission."""
    with service.http() as http:
        response = http.put(
            f"/v1/admin/accounts/{client.client_id}/role-mappings",
            json={"mappings": [{"name": "rb", "roles": ["reader"], "permissions": []}]},
            headers=service.admin_headers(),
        )
    assert response.status_code == 200, response.text


# --- scitokens-cpp in a child process ----------------------------------------------------------------


def cpp_check(issuer: str, kid: str, pem: bytes, token: str, profile: int, tests: list[list[str]], cache: Path) -> Any:
    """Run :func:`_cpp_main` in a child with its own key cache; returns its JSON answer."""
    request = {"issuer": issuer, "kid": kid, "pem": pem.decode(), "token": token, "profile": profile, "tests": tests}
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(cache)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "operator")])
    code = "from tests.integration.security.test_profiles_validators import _cpp_main; _cpp_main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(request), capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _cpp_main() -> None:
    """Child side: verify the token, then answer each (authz, path, audience) with the enforcer."""
    request = json.load(sys.stdin)
    cpp = ScitokensCpp(load_scitokens_cpp(), request["profile"], issuer=request["issuer"])
    cpp.trust(request["kid"], request["pem"].encode())
    accepted, message = cpp.verify(request["token"])
    allows = [cpp.allows(request["token"], *test) for test in request["tests"]] if accepted else []
    json.dump({"accepted": accepted, "message": message, "allows": allows}, sys.stdout)


def test_wlcg_tokens_pass_scitokens_cpp(service: Service, tmp_path: Path) -> None:
    client = service.register(permissions=PERMISSIONS, audiences=(AUDIENCE,))
    body = granted(service, client)
    assert body["scope"] == "storage.read:/store/artifacts storage.read:/store/builds storage.modify:/store/builds"
    kid, pem = public_key(service, body["access_token"])
    tests = [
        ["storage.read", "/store/artifacts/run-7/log", AUDIENCE],
        ["storage.modify", "/store/builds/42", AUDIENCE],
        ["storage.modify", "/store/artifacts/x", AUDIENCE],
        ["storage.read", "/store", AUDIENCE],
        ["storage.read", "/store/artifacts/x", "https://elsewhere.example"],
    ]
    answer = cpp_check(service.base_url, kid, pem, body["access_token"], WLCG_1_0, tests, tmp_path)
    assert answer["accepted"], answer["message"]
    assert answer["allows"] == [True, True, False, False, False]


def test_wlcg_token_without_permissions_has_no_scope_and_still_validates(service: Service, tmp_path: Path) -> None:
    client = service.register(audiences=(AUDIENCE,))
    set_roles_only(service, client)
    body = granted(service, client)
    assert "scope" not in body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert "scope" not in claims
    assert claims["roles"] == ["reader"]
    kid, pem = public_key(service, body["access_token"])
    answer = cpp_check(
        service.base_url, kid, pem, body["access_token"], WLCG_1_0, [["storage.read", "/", AUDIENCE]], tmp_path
    )
    assert answer == {"accepted": True, "message": "", "allows": [False]}


def test_scitokens_tokens_pass_both_reference_validators(start_service: StartService, tmp_path: Path) -> None:
    service = start_service(scope_profile="scitokens")
    client = service.register(permissions=PERMISSIONS, audiences=(AUDIENCE,))
    body = granted(service, client)
    assert body["scope"] == "read:/store/artifacts read:/store/builds write:/store/builds"
    token = body["access_token"]
    kid, pem = public_key(service, token)
    with scitokens_cache_in(tmp_path):
        parsed = scitokens.SciToken.deserialize(token, public_key=pem)
        enforcer = scitokens.Enforcer(service.base_url, audience=AUDIENCE)
        assert enforcer.test(parsed, "read", "/store/artifacts/run-7/log"), enforcer.last_failure
        assert enforcer.test(parsed, "write", "/store/builds/42"), enforcer.last_failure
        assert not enforcer.test(parsed, "write", "/store/artifacts/x")
        assert not enforcer.test(parsed, "read", "/store/artifacts-old")
    tests = [["read", "/store/artifacts/x", AUDIENCE], ["write", "/store/artifacts/x", AUDIENCE]]
    answer = cpp_check(service.base_url, kid, pem, token, SCITOKENS_2_0, tests, tmp_path / "cpp")
    assert answer["accepted"], answer["message"]
    assert answer["allows"] == [True, False]

"""Registration: the operator tells the real security service about each credential; workloads then get tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from tests.integration.test_operator import credential, decoded, ready
from tests.support.kube import apply, condition, events_for, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess
from credward.domain.claims import CLOCK_SKEW_ALLOWANCE
from credward.domain.secrets import hash_key_id

pytestmark = pytest.mark.integration


def secret_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    secret = get(plane, "secret", f"{name}-credentials", namespace)
    assert secret is not None
    return decoded(secret)


def claims_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_registered_account_gets_tokens_with_the_mounted_secret(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(
        control_plane,
        credential("reg", tokenTTL="2m", audiences=["https://store.example"], groups=["/ci/builders", "/ci"]),
        namespace,
    )
    obj = ready(control_plane, namespace, "reg")
    status = obj["status"]
    registered = condition(obj, "Registered")
    assert registered is not None
    assert (registered["status"], registered["reason"]) == ("True", "Registered")
    held = security.account(status["clientId"])
    assert held is not None
    assert held["identity"] == status["identity"]
    assert (held["namespace"], held["name"], held["status"]) == (namespace, "reg", "active")
    assert held["audiences"] == ["https://store.example"]
    assert held["groups"] == ["/ci/builders", "/ci"]
    assert held["tokenTTLSeconds"] == 120
    assert [s["id"] for s in held["secrets"]] == [s["id"] for s in status["activeSecrets"]]
    # Ready means the service accepts the Secret's secret: a workload gets a token with it, first try.
    data = secret_of(control_plane, namespace, "reg")
    claims = claims_of(security.token(data["client-id"], data["client-secret"], audience="https://store.example"))
    assert claims["sub"] == status["identity"]
    assert claims["aud"] == "https://store.example"
    assert claims["exp"] - claims["iat"] == 120 + CLOCK_SKEW_ALLOWANCE  # iat is backdated
    # The service and the operator agree on the hash key (by its public id), and nothing secret leaked.
    assert security.info()["hashKeyId"] == hash_key_id(security.hash_key)
    hashes = json.dumps(held)
    assert data["client-secret"] not in hashes
    assert data["client-secret"] not in operator.log_path.read_text()
    assert data["client-secret"] not in security.log_path.read_text()


def test_a_recreated_secret_is_accepted_the_moment_it_appears(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    """The new secret is registered before it is written: no window where the Secret holds a refused secret."""
    apply(control_plane, credential("order"), namespace)
    ready(control_plane, namespace, "order")
    old = get(control_plane, "secret", "order-credentials", namespace)
    assert old is not None
    control_plane.kubectl("delete", "secret", "order-credentials", "-n", namespace)
    new = wait_for(
        lambda: (
            (s := get(control_plane, "secret", "order-credentials", namespace))
            and s["metadata"]["uid"] != old["metadata"]["uid"]
            and s
        ),
        "the Secret to be recreated",
        interval=0.05,
    )
    data = decoded(new)
    assert data["client-secret"] != decoded(old)["client-secret"]
    claims_of(security.token(data["client-id"], data["client-secret"]))  # at once, no retry
    refused = security.token(data["client-id"], decoded(old)["client-secret"])
    assert refused.status_code == 401


def test_token_ttl_above_the_service_maximum_is_reported(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("long", tokenTTL="2h"), namespace)
    obj = ready(control_plane, namespace, "long")
    registered = condition(obj, "Registered")
    assert registered is not None
    max_ttl = security.info()["maxTokenTTLSeconds"]
    assert max_ttl < 7200
    assert f"tokens live {max_ttl}s, not the 7200s of spec.tokenTTL" in registered["message"]
    warning = wait_for(
        lambda: [e for e in events_for(control_plane, namespace, "long") if e["reason"] == "TokenTTLCapped"],
        "a TokenTTLCapped warning",
    )
    assert warning[0]["type"] == "Warning"
    data = secret_of(control_plane, namespace, "long")
    claims = claims_of(security.token(data["client-id"], data["client-secret"]))
    assert claims["exp"] - claims["iat"] == max_ttl + CLOCK_SKEW_ALLOWANCE  # iat is backdated


def test_revoked_credential_is_revoked_in_the_service(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("rev"), namespace)
    obj = ready(control_plane, namespace, "rev")
    client_id = obj["status"]["clientId"]
    data = secret_of(control_plane, namespace, "rev")
    claims_of(security.token(data["client-id"], data["client-secret"]))
    apply(control_plane, credential("rev", revoked=True), namespace)
    wait_for(lambda: (security.account(client_id) or {}).get("status") == "revoked", "the account to be revoked")
    assert security.token(data["client-id"], data["client-secret"]).status_code in (400, 401)
    cond = condition(get(control_plane, "sac", "rev", namespace), "Ready")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "Revoked")
    apply(control_plane, credential("rev"), namespace)  # and back
    ready(control_plane, namespace, "rev")
    wait_for(lambda: security.token(data["client-id"], data["client-secret"]).status_code == 200, "tokens again")


def test_deleting_a_credential_removes_its_account(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("bye"), namespace)
    client_id = ready(control_plane, namespace, "bye")["status"]["clientId"]
    assert security.account(client_id) is not None
    control_plane.kubectl("delete", "sac", "bye", "-n", namespace, "--timeout=30s")
    assert get(control_plane, "sac", "bye", namespace) is None
    assert security.account(client_id) is None


def test_skip_cleanup_annotation_keeps_the_account(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("keep"), namespace)
    client_id = ready(control_plane, namespace, "keep")["status"]["clientId"]
    control_plane.kubectl("annotate", "sac", "keep", "-n", namespace, "credward.io/skip-account-cleanup=true")
    control_plane.kubectl("delete", "sac", "keep", "-n", namespace, "--timeout=30s")
    assert get(control_plane, "sac", "keep", namespace) is None
    assert security.account(client_id) is not None
    with security.admin() as http:  # leave the service as the test found it
        http.delete(f"/v1/admin/accounts/{client_id}")


def test_secret_never_sent_only_its_hash(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    """The admin API shows secret ids, never values or hashes; the Secret's value is in the Secret alone."""
    apply(control_plane, credential("hashonly"), namespace)
    obj = ready(control_plane, namespace, "hashonly")
    held = security.account(obj["status"]["clientId"])
    assert held is not None
    value = secret_of(control_plane, namespace, "hashonly")["client-secret"]
    assert value not in json.dumps(held)
    assert base64.b64encode(value.encode()).decode() not in security.log_path.read_text()
    assert all(set(s) <= {"id", "createdAt", "notAfter", "lastUsedAt", "distinctCallers"} for s in held["secrets"])

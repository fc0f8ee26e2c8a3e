"""RoleBindings reach the real security service: merged per account, Synced, removed exactly, waiting for accounts."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from tests.integration.test_operator import binding, credential, decoded, ready, synced
from tests.support.kube import apply, condition, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess

pytestmark = pytest.mark.integration


def token_claims(plane: ControlPlane, security: SecurityServer, namespace: str, name: str) -> dict[str, Any]:
    secret = get(plane, "secret", f"{name}-credentials", namespace)
    assert secret is not None
    data = decoded(secret)
    response = security.token(data["client-id"], data["client-secret"])
    assert response.status_code == 200, response.text
    claims: dict[str, Any] = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    return claims


def mapping_names(security: SecurityServer, client_id: str) -> set[str]:
    return {m["name"] for m in (security.account(client_id) or {}).get("roleMappings", [])}


def test_bindings_of_one_account_are_merged_and_removed_exactly(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("app"), namespace)
    client_id = ready(control_plane, namespace, "app")["status"]["clientId"]
    apply(
        control_plane,
        binding("readers", "app", roles=["reader"], permissions=[{"verbs": ["read"], "path": ["store", "data"]}]),
        namespace,
    )
    apply(
        control_plane,
        binding("writers", "app", roles=["writer"], permissions=[{"verbs": ["write"], "path": ["store", "out", "*"]}]),
        namespace,
    )
    wait_for(
        lambda: synced(control_plane, namespace, "readers") and synced(control_plane, namespace, "writers"),
        "both bindings Synced",
    )
    assert mapping_names(security, client_id) == {"readers", "writers"}
    claims = token_claims(control_plane, security, namespace, "app")
    assert set(claims["roles"]) == {"reader", "writer"}
    scopes = set(claims["scope"].split())
    assert any(s.endswith(":/store/data") for s in scopes)
    assert any(s.endswith(":/store/out") for s in scopes)  # a trailing * means the same as the path itself
    table = control_plane.kubectl("get", "rolebindings.credward.io", "-n", namespace).stdout
    assert [line.split()[2] for line in table.splitlines()[1:]] == ["True", "True"]  # the SYNCED column

    control_plane.kubectl("delete", "rolebindings.credward.io", "writers", "-n", namespace)
    wait_for(lambda: mapping_names(security, client_id) == {"readers"}, "the writers mapping to go")
    claims = token_claims(control_plane, security, namespace, "app")
    assert claims["roles"] == ["reader"]
    assert not any(s.endswith(":/store/out") for s in claims["scope"].split())


def test_binding_to_a_missing_account_waits_for_it(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, binding("early", "later", roles=["builder"]), namespace)
    cond = wait_for(
        lambda: (
            (c := condition(get(control_plane, "rolebindings.credward.io", "early", namespace), "Synced"))
            and c["reason"] == "AccountNotFound"
            and c
        ),
        "Synced=False/AccountNotFound",
    )
    assert cond["status"] == "False"
    assert "later" in cond["message"]
    apply(control_plane, credential("later"), namespace)
    wait_for(lambda: synced(control_plane, namespace, "early"), "the binding to sync once the account exists")
    assert token_claims(control_plane, security, namespace, "later")["roles"] == ["builder"]
    # And when the account goes, the binding waits again.
    control_plane.kubectl("delete", "sac", "later", "-n", namespace, "--timeout=30s")
    wait_for(
        lambda: (
            (c := condition(get(control_plane, "rolebindings.credward.io", "early", namespace), "Synced"))
            and c["reason"] == "AccountNotFound"
        ),
        "AccountNotFound again after the credential is deleted",
    )


def test_binding_change_reaches_the_token_endpoint(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("live"), namespace)
    ready(control_plane, namespace, "live")
    for part in ("one", "two"):
        apply(
            control_plane,
            binding("moving", "live", permissions=[{"verbs": ["read"], "path": ["data", part]}]),
            namespace,
        )

        def granted(part: str = part) -> bool:
            scopes = token_claims(control_plane, security, namespace, "live").get("scope", "").split()
            return any(s.endswith(f":/data/{part}") for s in scopes)

        wait_for(granted, f"a token with /data/{part}")

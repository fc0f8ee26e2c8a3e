"""Nothing is lost when the security service is down, restarts, or comes back with an empty store.

These tests stop, restart and wipe the session's real service (``security_up`` starts it again
afterwards, even on failure); the operator is never restarted and nobody pokes a resource.
"""

from __future__ import annotations

import pytest
from tests.integration.test_operator import binding, credential, decoded, ready, synced
from tests.support.kube import apply, condition, events_for, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess

pytestmark = pytest.mark.integration


def reason(plane: ControlPlane, kind: str, namespace: str, name: str, type_: str) -> str | None:
    cond = condition(get(plane, kind, name, namespace), type_)
    return f"{cond['status']}/{cond['reason']}" if cond else None


def test_credential_made_while_the_service_is_down_converges_when_it_returns(
    control_plane: ControlPlane, operator: ChildProcess, security_up: SecurityServer, namespace: str
) -> None:
    security_up.stop()
    apply(control_plane, credential("patient"), namespace)
    wait_for(
        lambda: reason(control_plane, "sac", namespace, "patient", "Registered") == "False/ServiceUnreachable",
        "Registered=False/ServiceUnreachable",
    )
    assert reason(control_plane, "sac", namespace, "patient", "Ready") == "False/ServiceUnreachable"
    # A new secret that the service cannot hold is never written where a workload would mount it.
    assert get(control_plane, "secret", "patient-credentials", namespace) is None
    assert "ServiceUnreachable" in {e["reason"] for e in events_for(control_plane, namespace, "patient")}
    security_up.start()
    obj = ready(control_plane, namespace, "patient", timeout=30)
    data = decoded(get(control_plane, "secret", "patient-credentials", namespace))  # type: ignore[arg-type]
    assert security_up.token(data["client-id"], data["client-secret"]).status_code == 200
    assert condition(obj, "Registered")["status"] == "True"  # type: ignore[index]


def test_an_empty_store_is_filled_again_with_the_same_secrets_and_bindings(
    control_plane: ControlPlane, operator: ChildProcess, security_up: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("survivor"), namespace)
    apply(control_plane, binding("survivor-roles", "survivor", roles=["builder"]), namespace)
    client_id = ready(control_plane, namespace, "survivor")["status"]["clientId"]
    wait_for(lambda: synced(control_plane, namespace, "survivor-roles"), "the binding Synced")
    secret = get(control_plane, "secret", "survivor-credentials", namespace)
    assert secret is not None
    store_before = security_up.info()["storeId"]

    security_up.wipe()
    security_up.start()
    assert security_up.info()["storeId"] != store_before
    held = wait_for(lambda: security_up.account(client_id), "the account to be registered again", timeout=30)
    wait_for(
        lambda: (
            [m["name"] for m in (security_up.account(client_id) or {}).get("roleMappings", [])] == ["survivor-roles"]
        ),
        "the role mappings to be pushed again",
    )
    # The same secret as before: workloads that mounted it keep working, the Secret was not touched.
    after = get(control_plane, "secret", "survivor-credentials", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert [s["id"] for s in held["secrets"]] == [
        s["id"]
        for s in get(control_plane, "sac", "survivor", namespace)["status"]["activeSecrets"]  # type: ignore[index]
    ]
    data = decoded(after)
    response = security_up.token(data["client-id"], data["client-secret"])
    assert response.status_code == 200, response.text


def test_binding_changed_while_the_service_is_down_is_synced_when_it_returns(
    control_plane: ControlPlane, operator: ChildProcess, security_up: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("steady"), namespace)
    client_id = ready(control_plane, namespace, "steady")["status"]["clientId"]
    security_up.stop()
    apply(control_plane, binding("late-roles", "steady", roles=["late"]), namespace)
    wait_for(
        lambda: (
            reason(control_plane, "rolebindings.credward.io", namespace, "late-roles", "Synced")
            == "False/ServiceUnreachable"
        ),
        "Synced=False/ServiceUnreachable",
    )
    security_up.start()
    wait_for(lambda: synced(control_plane, namespace, "late-roles"), "the binding to sync after the outage")
    assert [m["name"] for m in security_up.account(client_id)["roleMappings"]] == ["late-roles"]  # type: ignore[index]


def test_deletion_does_not_wait_forever_for_a_service_that_is_gone(
    control_plane: ControlPlane, operator: ChildProcess, security_up: SecurityServer, namespace: str
) -> None:
    """The operator runs with CREDWARD_CLEANUP_TIMEOUT=20s (tests/conftest.py): then it gives up, loudly."""
    apply(control_plane, credential("orphaned"), namespace)
    ready(control_plane, namespace, "orphaned")
    security_up.stop()
    control_plane.kubectl("delete", "sac", "orphaned", "-n", namespace, "--wait=false")
    wait_for(
        lambda: "AccountCleanupPending" in {e["reason"] for e in events_for(control_plane, namespace, "orphaned")},
        "an AccountCleanupPending warning",
    )
    assert get(control_plane, "sac", "orphaned", namespace) is not None  # still waiting, for now
    wait_for(lambda: get(control_plane, "sac", "orphaned", namespace) is None, "the deletion to finish", timeout=60)
    abandoned = [
        e for e in events_for(control_plane, namespace, "orphaned") if e["reason"] == "AccountCleanupAbandoned"
    ]
    assert abandoned
    assert abandoned[0]["type"] == "Warning"
    assert "DELETE /v1/admin/accounts/" in abandoned[0]["message"]

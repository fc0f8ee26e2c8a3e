"""The operator against the real control plane: Secrets, status, events, repair, conflict, GC, restart."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from tests.conftest import SECURITY_BASE_URL
from tests.support.kube import apply, condition, events_for, get, wait_for

from credward.devcluster import ControlPlane
from credward.devcluster.processes import OPERATOR_USER, ChildProcess

pytestmark = pytest.mark.integration

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def credential(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "ServiceAccountCredential",
        "metadata": {"name": name},
        "spec": {"displayName": f"{name} for tests", **spec},
    }


def ready(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(plane, "serviceaccountcredential", name, namespace)
        cond = condition(obj, "Ready")
        return (
            obj
            if cond
            and cond["status"] == "True"
            and obj
            and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            else None
        )

    return wait_for(check, f"credential {namespace}/{name} Ready")


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_credential_becomes_secret_with_status_and_event(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(
        control_plane,
        credential("builder", secretTemplate={"labels": {"team": "ci"}, "annotations": {"owner": "ci@example.org"}}),
        namespace,
    )
    obj = ready(control_plane, namespace, "builder")
    status = obj["status"]
    secret = get(control_plane, "secret", "builder-credentials", namespace)
    assert secret is not None
    data = decoded(secret)
    assert set(data) == {"client-id", "client-secret", "token-url", "issuer"}
    assert data["client-id"] == status["clientId"]
    assert len(data["client-secret"]) >= 43  # 256 bits, base64url
    assert data["token-url"] == f"{SECURITY_BASE_URL}/oauth2/token"
    assert data["issuer"] == SECURITY_BASE_URL
    assert status["identity"] == f"{status['clientId']}@clients.credward-security.test"
    assert status["secretName"] == "builder-credentials"
    assert [s["id"] for s in status["activeSecrets"]]
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ServiceAccountCredential",
        "builder",
        obj["metadata"]["uid"],
        True,
    )
    assert secret["metadata"]["labels"]["team"] == "ci"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "credward"
    assert secret["metadata"]["annotations"]["owner"] == "ci@example.org"
    reasons = wait_for(
        lambda: {e["reason"] for e in events_for(control_plane, namespace, "builder")} or None, "an event"
    )
    assert "SecretCreated" in reasons
    # The secret value appears nowhere but in the Secret.
    assert data["client-secret"] not in json.dumps(obj)
    assert data["client-secret"] not in json.dumps(events_for(control_plane, namespace, "builder"))
    assert data["client-secret"] not in operator.log_path.read_text()


def test_printer_columns_show_ready_client_and_secret(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(control_plane, credential("columns"), namespace)
    obj = ready(control_plane, namespace, "columns")
    table = control_plane.kubectl("get", "sac", "columns", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    for column in ("READY", "CLIENT ID", "SECRET", "NEXT ROTATION", "AGE"):
        assert column in header
    assert obj["status"]["clientId"] in row
    assert "columns-credentials" in row


def test_deleted_secret_is_recreated_with_same_client_id(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(control_plane, credential("repair"), namespace)
    before = ready(control_plane, namespace, "repair")
    old = get(control_plane, "secret", "repair-credentials", namespace)
    assert old is not None
    control_plane.kubectl("delete", "secret", "repair-credentials", "-n", namespace)
    new = wait_for(
        lambda: (
            (s := get(control_plane, "secret", "repair-credentials", namespace))
            and s["metadata"]["uid"] != old["metadata"]["uid"]
            and s
        ),
        "the Secret to be recreated",
    )
    assert decoded(new)["client-id"] == before["status"]["clientId"]
    assert decoded(new)["client-secret"] != decoded(old)["client-secret"]
    wait_for(
        lambda: "SecretRecreated" in {e["reason"] for e in events_for(control_plane, namespace, "repair")},
        "a SecretRecreated event",
    )


def test_tampered_secret_is_restored(control_plane: ControlPlane, operator: ChildProcess, namespace: str) -> None:
    apply(control_plane, credential("tamper"), namespace)
    ready(control_plane, namespace, "tamper")
    original = decoded(get(control_plane, "secret", "tamper-credentials", namespace))  # type: ignore[arg-type]
    patch = {"data": {"token-url": base64.b64encode(b"http://attacker.example/token").decode()}}
    control_plane.kubectl(
        "patch", "secret", "tamper-credentials", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )

    def restored_secret() -> dict[str, Any] | None:
        s = get(control_plane, "secret", "tamper-credentials", namespace)
        return s if s and decoded(s)["token-url"] == original["token-url"] else None

    restored = wait_for(restored_secret, "the token-url to be restored")
    # Restoring plain keys does not rotate the secret: workloads keep working.
    assert decoded(restored)["client-secret"] == original["client-secret"]


def test_foreign_secret_is_never_overwritten(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    control_plane.kubectl(
        "create", "secret", "generic", "taken-credentials", "-n", namespace, "--from-literal=client-secret=theirs"
    )
    before = get(control_plane, "secret", "taken-credentials", namespace)
    assert before is not None
    apply(control_plane, credential("taken"), namespace)
    cond = wait_for(
        lambda: (
            (c := condition(get(control_plane, "sac", "taken", namespace), "Ready"))
            and c["reason"] == "SecretConflict"
            and c
        ),
        "Ready=False/SecretConflict",
    )
    assert cond["status"] == "False"
    assert "taken-credentials" in cond["message"]
    wait_for(
        lambda: "SecretConflict" in {e["reason"] for e in events_for(control_plane, namespace, "taken")},
        "a SecretConflict warning event",
    )
    after = get(control_plane, "secret", "taken-credentials", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert decoded(after) == {"client-secret": "theirs"}
    # Once the foreign Secret is gone, the credential gets its own.
    control_plane.kubectl("delete", "secret", "taken-credentials", "-n", namespace)
    control_plane.kubectl("annotate", "sac", "taken", "-n", namespace, "poke=1")  # any event triggers a reconcile
    ready(control_plane, namespace, "taken")


def test_template_change_updates_and_removes_secret_metadata(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(control_plane, credential("tmpl", secretTemplate={"labels": {"a": "1", "b": "2"}}), namespace)
    ready(control_plane, namespace, "tmpl")
    apply(control_plane, credential("tmpl", secretTemplate={"labels": {"a": "changed"}}), namespace)
    labels = wait_for(
        lambda: (
            (s := get(control_plane, "secret", "tmpl-credentials", namespace))
            and s["metadata"]["labels"].get("a") == "changed"
            and s["metadata"]["labels"]
        ),
        "label a to change",
    )
    assert "b" not in labels
    assert labels["app.kubernetes.io/managed-by"] == "credward"


def test_deleting_credential_garbage_collects_secret(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(control_plane, credential("gone"), namespace)
    ready(control_plane, namespace, "gone")
    control_plane.kubectl("delete", "sac", "gone", "-n", namespace)
    wait_for(
        lambda: get(control_plane, "secret", "gone-credentials", namespace) is None,
        "the Secret to be garbage-collected",
        timeout=60,
    )
    # No finalizer was needed for that: the credential carried none.
    assert get(control_plane, "sac", "gone", namespace) is None


def operator_writes(plane: ControlPlane) -> list[dict[str, Any]]:
    return [
        e
        for e in plane.audit_events()
        if e["user"]["username"] == OPERATOR_USER and e["verb"] in WRITE_VERBS and e["stage"] == "ResponseComplete"
    ]


def test_restart_with_up_to_date_resources_makes_zero_writes(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    for i in range(3):
        apply(control_plane, credential(f"steady-{i}", secretTemplate={"labels": {"n": str(i)}}), namespace)
    for i in range(3):
        ready(control_plane, namespace, f"steady-{i}")
    time.sleep(2)  # let the last status write's watch event settle
    operator.stop()
    before = len(operator_writes(control_plane))
    assert before > 0  # the audit log does see this operator's writes
    offset = operator.log_path.stat().st_size
    operator.start()
    # The restarted operator lists every credential and reconciles each; wait until it has.
    wait_for(
        lambda: operator.log_path.read_text()[offset:].count("Handler 'credential' succeeded") >= 3,
        "the restarted operator to reconcile the existing credentials",
    )
    time.sleep(2)  # room for any write it would make after deciding
    operator.stop()
    writes = operator_writes(control_plane)[before:]
    assert writes == [], [f"{w['verb']} {w['requestURI']}" for w in writes]
    operator.start()


def test_no_client_secret_in_the_debug_log(control_plane: ControlPlane, operator: ChildProcess) -> None:
    """Every Secret credward made so far in this session: none of their values is in the operator's DEBUG log."""
    listing = control_plane.kubectl(
        "get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=credward", "-o", "json"
    ).stdout
    values = [decoded(s)["client-secret"] for s in json.loads(listing)["items"]]
    assert values
    log = operator.log_path.read_text()
    assert "DEBUG" in log
    assert not [v for v in values if v in log]

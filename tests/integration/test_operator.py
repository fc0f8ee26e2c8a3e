"""The operator against the real control plane and service: Secrets, status, events, repair, conflict, GC, restart."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.support.kube import apply, condition, events_for, get, wait_for
from tests.support.service import SecurityServer

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


def ready(plane: ControlPlane, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
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

    return wait_for(check, f"credential {namespace}/{name} Ready", timeout=timeout)


def binding(name: str, account: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "spec": {"serviceAccount": account, **spec},
    }


def synced(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    obj = get(plane, "rolebindings.credward.io", name, namespace)
    cond = condition(obj, "Synced")
    return obj if cond and cond["status"] == "True" else None


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_credential_becomes_secret_with_status_and_event(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
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
    assert data["token-url"] == f"{security.base_url}/oauth2/token"
    assert data["issuer"] == security.base_url
    assert status["identity"] == f"{status['clientId']}@clients.127.0.0.1"
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
    # Once the foreign Secret is gone, the credential gets its own within seconds, with nothing else touched.
    control_plane.kubectl("delete", "secret", "taken-credentials", "-n", namespace)
    ready(control_plane, namespace, "taken", timeout=15)


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
    obj = ready(control_plane, namespace, "gone")
    assert obj["metadata"]["finalizers"] == ["credward.io/account-cleanup"]
    control_plane.kubectl("delete", "sac", "gone", "-n", namespace)
    wait_for(
        lambda: get(control_plane, "secret", "gone-credentials", namespace) is None,
        "the Secret to be garbage-collected",
        timeout=60,
    )
    assert get(control_plane, "sac", "gone", namespace) is None


def operator_writes(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """The operator's completed writes into ``namespace`` (other tests' namespaces are none of this test's business)."""
    return [
        e
        for e in plane.audit_events()
        if e["user"]["username"] == OPERATOR_USER
        and e["verb"] in WRITE_VERBS
        and e["stage"] == "ResponseComplete"
        and (e.get("objectRef") or {}).get("namespace") == namespace
    ]


def test_restart_with_up_to_date_resources_makes_zero_writes(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    names = [f"steady-{i}" for i in range(3)]
    for i, name in enumerate(names):
        apply(control_plane, credential(name, secretTemplate={"labels": {"n": str(i)}}), namespace)
    apply(control_plane, binding("steady-roles", "steady-0", roles=["builder"]), namespace)
    for name in names:
        ready(control_plane, namespace, name)
    wait_for(lambda: synced(control_plane, namespace, "steady-roles"), "the binding to be Synced")
    time.sleep(2)  # let the last status write's watch event settle
    operator.stop()
    before = len(operator_writes(control_plane, namespace))
    assert before > 0  # the audit log does see this operator's writes
    offset = operator.log_path.stat().st_size
    operator.start()
    # The restarted operator lists every credential and reconciles each; wait until it has done these three.
    wait_for(
        lambda: all(f"{namespace}/{name}: reconciled" in operator.log_path.read_text()[offset:] for name in names),
        "the restarted operator to reconcile the existing credentials",
    )
    time.sleep(2)  # room for any write it would make after deciding
    operator.stop()
    writes = operator_writes(control_plane, namespace)[before:]
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


def test_edited_credential_label_is_repaired(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    """The owner reference, not the label, says which credential a Secret belongs to."""
    apply(control_plane, credential("labelled"), namespace)
    ready(control_plane, namespace, "labelled")
    control_plane.kubectl(
        "label", "secret", "labelled-credentials", "-n", namespace, "credward.io/credential=someone-else", "--overwrite"
    )
    wait_for(
        lambda: (
            (s := get(control_plane, "secret", "labelled-credentials", namespace))
            and s["metadata"]["labels"].get("credward.io/credential") == "labelled"
        ),
        "the credential label to be restored",
        timeout=15,
    )


def test_removed_managed_by_label_is_repaired(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    """Removing the label takes the Secret out of the operator's label-selected watch: it is repaired anyway."""
    apply(control_plane, credential("unlabelled"), namespace)
    ready(control_plane, namespace, "unlabelled")
    before = decoded(get(control_plane, "secret", "unlabelled-credentials", namespace))  # type: ignore[arg-type]
    control_plane.kubectl("label", "secret", "unlabelled-credentials", "-n", namespace, "app.kubernetes.io/managed-by-")
    restored = wait_for(
        lambda: (
            (s := get(control_plane, "secret", "unlabelled-credentials", namespace))
            and s["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "credward"
            and s
        ),
        "the managed-by label to be restored",
        timeout=15,
    )
    assert decoded(restored)["client-secret"] == before["client-secret"]  # repaired, not rotated


@contextmanager
def refusing_policy(plane: ControlPlane, namespace: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that makes the API server refuse Secrets labelled ``refuse-me`` in ``namespace``."""
    name = f"{namespace}-refuse"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["secrets"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.metadata.labels) || !('refuse-me' in object.metadata.labels)",
                    "message": "Secrets labelled refuse-me are refused in this namespace",
                }
            ],
        },
    }
    policy_binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    for manifest in (policy, policy_binding):
        plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: _refused_now(plane, namespace), "the admission policy to take effect")
    try:
        yield name
    finally:
        plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False)


def _refused_now(plane: ControlPlane, namespace: str) -> bool:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "probe", "namespace": namespace, "labels": {"refuse-me": "1"}},
    }
    proc = plane.kubectl("create", "--dry-run=server", "-f", "-", check=False, input=json.dumps(manifest))
    return proc.returncode != 0 and "refused in this namespace" in proc.stderr


def test_refused_secret_write_is_a_condition_and_an_event(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    """An API server refusal of the Secret write: Ready=False with its message and a Warning, then recovery."""
    with refusing_policy(control_plane, namespace):
        apply(control_plane, credential("refused", secretTemplate={"labels": {"refuse-me": "yes"}}), namespace)
        cond = wait_for(
            lambda: (
                (c := condition(get(control_plane, "sac", "refused", namespace), "Ready"))
                and c["reason"] == "SecretRefused"
                and c
            ),
            "Ready=False/SecretRefused",
        )
        assert cond["status"] == "False"
        assert "refused in this namespace" in cond["message"]
        events = wait_for(
            lambda: [e for e in events_for(control_plane, namespace, "refused") if e["reason"] == "SecretRefused"],
            "a SecretRefused warning event",
        )
        assert events[0]["type"] == "Warning"
        assert "refused in this namespace" in events[0]["message"]
        assert get(control_plane, "secret", "refused-credentials", namespace) is None
        # Fixing the spec is enough: the operator writes the Secret and turns Ready.
        apply(control_plane, credential("refused"), namespace)
        ready(control_plane, namespace, "refused", timeout=20)


def test_no_writes_into_a_terminating_namespace(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    """Deleting a namespace deletes the Secret first at times; recreating it is refused (403): no retry, no noise."""
    for i in range(3):
        apply(control_plane, credential(f"doomed-{i}"), namespace)
    for i in range(3):
        ready(control_plane, namespace, f"doomed-{i}")
    offset = operator.log_path.stat().st_size
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(
        lambda: control_plane.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        "the namespace to be deleted (the finalizers let it go)",
        timeout=90,
    )
    time.sleep(2)
    noisy = [
        line
        for line in operator.log_path.read_text()[offset:].splitlines()
        if namespace in line and (" WARNING " in line or " ERROR " in line)
    ]
    assert noisy == []

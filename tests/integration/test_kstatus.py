"""What kstatus itself (sigs.k8s.io/cli-utils, as Flux and kpt use it) reads from credward's objects.

First the shapes credward's own code produces (decide() and kstatus_conditions(), not copies of
them), then objects read back from the real API server with the real operator running. Work
in progress must read InProgress and never Current before Ready; states only a person can end
must read Failed, with the reason, so that a pipeline stops waiting and says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.kstatus import Health, compute
from tests.support.kube import apply, condition, get, wait_for
from tests.unit.test_credential_decide import NOW, REF, held_after, observe, run, status_of

from credward.api import API_VERSION, CREDENTIAL_KIND
from credward.api.models import CredentialSpec, CredentialStatus, RoleBindingStatus
from credward.devcluster import Builder, ControlPlane
from credward.devcluster.processes import ChildProcess
from credward.domain.conditions import ConditionSpec, merge_conditions
from credward.domain.credential import ObservedSecret, status_document
from credward.domain.health import kstatus_conditions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kstatus() -> Path:
    """The kstatus command; `credward dev build` builds it with the control plane (cached)."""
    return Builder().ensure_kstatus()


def credential_object(status: dict[str, Any] | None, *, generation: int = REF.generation) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": CREDENTIAL_KIND,
        "metadata": {"name": REF.name, "namespace": REF.namespace, "uid": REF.uid, "generation": generation},
        "spec": {"displayName": "Builder"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def decided(spec: dict[str, Any], secret: ObservedSecret | None = None) -> dict[str, Any]:
    """The credential as decide() leaves it once the service took the account (a conflict: at once)."""
    s = CredentialSpec.model_validate(spec)
    plan = run(s, CredentialStatus(), secret)
    if secret is None:
        settled = run(s, status_of(plan), observe(plan), service=held_after(plan))
        plan = settled if settled.status is not None else plan
    assert plan.status is not None
    return credential_object(plan.status)


FOREIGN = ObservedSecret(name="builder-credentials", controller_uids=(), data={}, labels={}, annotations={})


@pytest.mark.parametrize(
    ("spec", "secret", "expected", "reason"),
    [
        ({"displayName": "b"}, None, "Current", None),
        ({"displayName": "b", "revoked": True}, None, "Failed", "Revoked"),
        ({"displayName": "b", "lifetime": "30m"}, None, "Failed", "Expired"),
        ({"displayName": "b"}, FOREIGN, "Failed", "SecretConflict"),
    ],
    ids=["ready", "revoked", "expired", "conflict"],
)
def test_decided_shapes(
    kstatus: Path, spec: dict[str, Any], secret: ObservedSecret | None, expected: str, reason: str | None
) -> None:
    obj = decided(spec, secret)
    health = compute(kstatus, obj)
    assert (health.status, health.reason) == (expected, reason)
    if expected == "Failed":
        stalled = condition(obj, "Stalled")
        assert stalled is not None
        assert health.message == stalled["message"]
        assert any(hint in health.message for hint in ("Delete", "Set spec.revoked"))


def test_a_spec_change_not_yet_seen_reads_in_progress(kstatus: Path) -> None:
    obj = decided({"displayName": "b"})
    obj["metadata"]["generation"] = REF.generation + 1
    assert compute(kstatus, obj) == Health(
        "InProgress",
        f"ServiceAccountCredential generation is {REF.generation + 1}, "
        f"but latest observed generation is {REF.generation}",
        "LatestGenerationNotObserved",
    )


@pytest.mark.parametrize("ready_status", ["False", "Unknown"])
def test_work_in_progress_reads_in_progress_with_its_reason(kstatus: Path, ready_status: str) -> None:
    wanted = kstatus_conditions([ConditionSpec("Ready", ready_status, "Registering", "Registering the account")])  # type: ignore[arg-type]
    status = CredentialStatus(
        observed_generation=REF.generation, conditions=merge_conditions((), wanted, NOW, REF.generation)
    )
    health = compute(kstatus, credential_object(status_document(status)))
    assert health == Health("InProgress", "Registering the account", "Registering")


def test_without_stalled_a_conflict_would_read_in_progress_forever(kstatus: Path) -> None:
    """Why Stalled is stated at all: kstatus reads Ready=False alone as work in progress, whatever the reason."""
    obj = decided({"displayName": "b"}, FOREIGN)
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert compute(kstatus, obj).status == "InProgress"


def rolebinding_object(synced: ConditionSpec) -> dict[str, Any]:
    wanted = kstatus_conditions([synced], summary="Synced")
    status = RoleBindingStatus(observed_generation=1, conditions=merge_conditions((), wanted, NOW, 1))
    return {
        "apiVersion": API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": "builder", "namespace": "ci", "generation": 1},
        "spec": {"serviceAccount": "builder", "roles": ["ci"]},
        "status": status.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def test_rolebinding_shapes(kstatus: Path) -> None:
    waiting = ConditionSpec("Synced", "False", "AccountNotFound", "No ServiceAccountCredential builder here yet")
    assert compute(kstatus, rolebinding_object(waiting)) == Health(
        "InProgress", "No ServiceAccountCredential builder here yet", "AccountNotFound"
    )
    synced = ConditionSpec("Synced", "True", "Synced", "The security service holds these roles")
    assert compute(kstatus, rolebinding_object(synced)).status == "Current"


# -- real objects from the API server, the real operator running ----------------------------------


def credential(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": CREDENTIAL_KIND,
        "metadata": {"name": name},
        "spec": {"displayName": f"{name} for tests", **spec},
    }


def watch_health(
    plane: ControlPlane, kstatus: Path, namespace: str, name: str, until: str, timeout: float = 30.0
) -> tuple[dict[str, Any], Health]:
    """Read the credential until kstatus says ``until``; on the way, Current only ever with Ready=True."""

    def check() -> tuple[dict[str, Any], Health] | None:
        obj = get(plane, "serviceaccountcredential", name, namespace)
        if obj is None:
            return None
        health = compute(kstatus, obj)
        ready = condition(obj, "Ready")
        if health.status == "Current":
            assert ready is not None
            assert ready["status"] == "True", obj["status"]
        return (obj, health) if health.status == until else None

    return wait_for(check, f"kstatus to read {namespace}/{name} as {until}", timeout=timeout)


def test_ready_credential_reads_current(
    control_plane: ControlPlane, operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    apply(control_plane, credential("healthy"), namespace)
    obj, health = watch_health(control_plane, kstatus, namespace, "healthy", "Current")
    assert health.message == "Resource is Ready"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def test_conflict_reads_failed(
    control_plane: ControlPlane, operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    control_plane.kubectl("create", "secret", "generic", "held-credentials", "-n", namespace, "--from-literal=k=v")
    apply(control_plane, credential("held"), namespace)
    _, health = watch_health(control_plane, kstatus, namespace, "held", "Failed")
    assert health.reason == "SecretConflict"
    assert "held-credentials" in health.message


def test_expired_credential_reads_failed(
    control_plane: ControlPlane, operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    apply(control_plane, credential("brief", lifetime="3s"), namespace)
    _, health = watch_health(control_plane, kstatus, namespace, "brief", "Failed")
    assert health.reason == "Expired"
    assert "recreate" in health.message


def test_revoked_credential_reads_failed(
    control_plane: ControlPlane, operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    apply(control_plane, credential("blocked"), namespace)
    watch_health(control_plane, kstatus, namespace, "blocked", "Current")
    apply(control_plane, credential("blocked", revoked=True), namespace)
    _, health = watch_health(control_plane, kstatus, namespace, "blocked", "Failed")
    assert health.reason == "Revoked"
    assert "spec.revoked" in health.message
    # Unblocking by hand is the way back.
    apply(control_plane, credential("blocked", revoked=False), namespace)
    watch_health(control_plane, kstatus, namespace, "blocked", "Current")


@pytest.fixture
def stopped_operator(operator: ChildProcess) -> Iterator[ChildProcess]:
    """The session's operator, stopped for the test and started again afterwards."""
    operator.stop()
    try:
        yield operator
    finally:
        if not operator.running:
            operator.start()


def test_work_the_operator_has_not_seen_reads_in_progress(
    control_plane: ControlPlane, stopped_operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    # A new credential, before any status is written (the CRD defaults status.observedGeneration to 0).
    apply(control_plane, credential("unseen"), namespace)
    obj = get(control_plane, "serviceaccountcredential", "unseen", namespace)
    assert obj is not None
    assert condition(obj, "Ready") is None
    health = compute(kstatus, obj)
    assert (health.status, health.reason) == ("InProgress", "LatestGenerationNotObserved")
    stopped_operator.start()
    watch_health(control_plane, kstatus, namespace, "unseen", "Current")
    # A spec change, before the operator has looked at it: the Ready=True it still shows is stale.
    stopped_operator.stop()
    apply(control_plane, credential("unseen", tokenTTL="10m"), namespace)
    obj = get(control_plane, "serviceaccountcredential", "unseen", namespace)
    assert obj is not None
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    health = compute(kstatus, obj)
    assert (health.status, health.reason) == ("InProgress", "LatestGenerationNotObserved")
    stopped_operator.start()
    watch_health(control_plane, kstatus, namespace, "unseen", "Current")


def test_rolebinding_for_an_account_that_does_not_exist_reads_in_progress(
    control_plane: ControlPlane, operator: ChildProcess, kstatus: Path, namespace: str
) -> None:
    binding = {
        "apiVersion": API_VERSION,
        "kind": "RoleBinding",
        "metadata": {"name": "early"},
        "spec": {"serviceAccount": "not-yet", "roles": ["ci"]},
    }
    apply(control_plane, binding, namespace)
    deadline = time.monotonic() + 3  # room for the operator to have written whatever it writes
    while time.monotonic() < deadline:
        obj = get(control_plane, "rolebindings.credward.io", "early", namespace)
        assert obj is not None
        assert compute(kstatus, obj).status == "InProgress", obj.get("status")
        time.sleep(0.3)

"""The credential lifecycle against the real control plane and the real service: usage-aware retirement, its hard
cap, emergency rotation with ``credward rotate --now``, ExpiringSoon and Expired, and the operator's metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.test_operator import credential, decoded, ready
from tests.support.kube import apply, condition, events_for, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess
from credward.domain.timefmt import parse_rfc3339

pytestmark = pytest.mark.integration


def rotate(plane: ControlPlane, namespace: str, name: str, *flags: str) -> str:
    """``credward rotate`` as a person runs it, with the control plane's kubeconfig."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "credward",
            "rotate",
            name,
            "-n",
            namespace,
            "--kubeconfig",
            str(plane.kubeconfig),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def secret_values(plane: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    secret = get(plane, "secret", f"{name}-credentials", namespace)
    assert secret is not None
    return decoded(secret)


def rotated_away_from(plane: ControlPlane, namespace: str, name: str, old: str) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        values = secret_values(plane, namespace, name)
        return values if values["client-secret"] != old else None

    return wait_for(check, f"{namespace}/{name} to hold a new secret", timeout=60)


def overlap_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """The status once it lists both secrets of the overlap (it is written just after the Secret)."""

    def check() -> dict[str, Any] | None:
        obj = get(plane, "sac", name, namespace)
        status: dict[str, Any] = (obj or {}).get("status") or {}
        return status if len(status.get("activeSecrets", [])) == 2 else None

    return wait_for(check, f"{namespace}/{name} status to show the overlap")


def reasons(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_for(plane, namespace, name)]


def event(plane: ControlPlane, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    return next((e for e in events_for(plane, namespace, name) if e["reason"] == reason), None)


def operator_metrics(operator: ChildProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the operator's /metrics, by name and labels."""
    text = httpx.get(operator.health_url.replace("/healthz", "/metrics"), timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(operator: ChildProcess, family: str, **labels: str) -> float | None:
    return operator_metrics(operator).get((family, tuple(sorted(labels.items()))))


def test_a_caller_still_using_the_old_secret_holds_retirement_until_quiet_with_a_warning(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    rotation = {"period": "720h", "gracePeriod": "8s", "quietPeriod": "12s", "maxOverlap": "10m"}
    apply(control_plane, credential("busy", rotation=rotation), namespace)
    ready(control_plane, namespace, "busy")
    first = secret_values(control_plane, namespace, "busy")
    client_id, old = first["client-id"], first["client-secret"]
    old_id = get(control_plane, "sac", "busy", namespace)["status"]["activeSecrets"][0]["id"]  # type: ignore[index]

    assert "rotation requested" in rotate(control_plane, namespace, "busy")
    new = rotated_away_from(control_plane, namespace, "busy", old)["client-secret"]
    rotated_at = parse_rfc3339(overlap_status(control_plane, namespace, "busy")["lastRotationTime"])

    # A workload that never re-read its file keeps using the old secret well past the grace period.
    last_sent = time.time()
    while (
        datetime.now(UTC) < rotated_at + timedelta(seconds=8)
        or event(control_plane, namespace, "busy", "SecretStillInUse") is None
    ):
        last_sent = time.time()
        assert security.token(client_id, old).status_code == 200, "the old secret was retired while in use"
        assert datetime.now(UTC) < rotated_at + timedelta(seconds=90), "no SecretStillInUse warning"
        time.sleep(0.5)
    warning = event(control_plane, namespace, "busy", "SecretStillInUse")
    assert warning is not None
    assert warning["type"] == "Warning"
    assert old_id in warning["message"]
    assert "1 caller(s)" in warning["message"]
    assert old not in warning["message"]
    assert new not in warning["message"]
    obj = get(control_plane, "sac", "busy", namespace)
    rotating = condition(obj, "Rotating")
    assert rotating is not None
    assert (rotating["status"], rotating["reason"]) == ("True", "SecretStillInUse")
    assert metric(operator, "credward_operator_secret_in_use_past_grace_callers", namespace=namespace, name="busy") == 1
    assert (metric(operator, "credward_operator_secret_still_in_use_warnings_total") or 0) >= 1
    # The service shows the old secret's use on its admin API, and the status mirrors it.
    view = security.account(client_id)
    assert view is not None
    used = {s["id"]: s for s in view["secrets"]}[old_id]
    assert used["distinctCallers"] == 1
    assert parse_rfc3339(used["lastUsedAt"]) >= rotated_at

    def mirrored() -> dict[str, Any] | None:
        obj = get(control_plane, "sac", "busy", namespace)
        active = {s["id"]: s for s in obj["status"]["activeSecrets"]} if obj else {}
        return active[old_id] if "lastUsedAt" in active.get(old_id, {}) else None

    assert parse_rfc3339(wait_for(mirrored, "lastUsedAt in status")["lastUsedAt"]) >= rotated_at

    # The workload stops using it: retirement follows once it was quiet for quietPeriod, not before.
    def retired() -> dict[str, Any] | None:
        obj = get(control_plane, "sac", "busy", namespace)
        cond = condition(obj, "Rotating")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for(retired, "the quiet old secret to be retired", timeout=60)
    assert parse_rfc3339(cond["lastTransitionTime"]) >= datetime.fromtimestamp(last_sent, UTC).replace(
        microsecond=0
    ) + timedelta(seconds=12 - 1)
    assert security.token(client_id, old).status_code == 401
    assert security.token(client_id, new).status_code == 200
    retirement = event(control_plane, namespace, "busy", "OldSecretRetired")
    assert retirement is not None
    assert "quietPeriod" in retirement["message"]
    assert "previous-client-secret" not in secret_values(control_plane, namespace, "busy")
    assert metric(operator, "credward_operator_secret_in_use_past_grace_callers", namespace=namespace, name="busy") == 0


def test_a_secret_in_use_until_its_cap_stops_at_the_cap(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    rotation = {"period": "720h", "gracePeriod": "5s", "quietPeriod": "5m", "maxOverlap": "20s"}
    apply(control_plane, credential("stuck", rotation=rotation), namespace)
    ready(control_plane, namespace, "stuck")
    first = secret_values(control_plane, namespace, "stuck")
    client_id, old = first["client-id"], first["client-secret"]
    rotate(control_plane, namespace, "stuck")
    new = rotated_away_from(control_plane, namespace, "stuck", old)["client-secret"]
    status = overlap_status(control_plane, namespace, "stuck")
    cap = parse_rfc3339(status["activeSecrets"][1]["notAfter"])
    assert cap == parse_rfc3339(status["lastRotationTime"]) + timedelta(seconds=20)
    view = security.account(client_id)
    assert view is not None
    assert [parse_rfc3339(s["notAfter"]) for s in view["secrets"] if s.get("notAfter")] == [cap]  # the service's cap

    # Used all along: accepted until the cap, refused from it on (the service enforces it by itself).
    refused_at: datetime | None = None
    while refused_at is None:
        now = datetime.now(UTC)
        answer = security.token(client_id, old).status_code
        if now < cap - timedelta(seconds=1):
            assert answer == 200, "the old secret stopped before its cap"
        if answer == 401:
            refused_at = now
        assert now < cap + timedelta(seconds=30), "the old secret outlived its cap"
        time.sleep(0.5)
    assert refused_at >= cap - timedelta(seconds=1)
    assert security.token(client_id, new).status_code == 200

    def retired() -> dict[str, Any] | None:
        found = event(control_plane, namespace, "stuck", "OldSecretRetired")
        return found if found and "maxOverlap" in found["message"] else None

    wait_for(retired, "the retirement at the cap", timeout=30)
    assert "SecretStillInUse" in reasons(control_plane, namespace, "stuck")


def test_rotate_now_stops_the_old_secret_at_once(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("leaked"), namespace)  # the default 24h grace period
    ready(control_plane, namespace, "leaked")
    first = secret_values(control_plane, namespace, "leaked")
    client_id, old = first["client-id"], first["client-secret"]
    assert security.token(client_id, old).status_code == 200
    out = rotate(control_plane, namespace, "leaked", "--now")
    assert "at once" in out
    values = rotated_away_from(control_plane, namespace, "leaked", old)
    assert "previous-client-secret" not in values
    # The service was told before the Secret was written: the old secret is refused already.
    assert security.token(client_id, old).status_code == 401
    assert security.token(client_id, values["client-secret"]).status_code == 200
    obj = ready(control_plane, namespace, "leaked")
    assert len(obj["status"]["activeSecrets"]) == 1
    rotated = event(control_plane, namespace, "leaked", "SecretRotated")
    assert rotated is not None
    assert "rotate-now" in rotated["message"]
    assert (metric(operator, "credward_operator_rotations_total", reason="emergency") or 0) >= 1


def test_expiring_soon_then_expired_and_the_service_refuses_new_tokens(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("shortlived", lifetime="40s", expiryWarning="25s"), namespace)
    obj = ready(control_plane, namespace, "shortlived")
    expires = parse_rfc3339(obj["status"]["expiresAt"])
    values = secret_values(control_plane, namespace, "shortlived")
    client_id, secret = values["client-id"], values["client-secret"]
    assert (
        metric(
            operator, "credward_operator_credential_expiry_timestamp_seconds", namespace=namespace, name="shortlived"
        )
        == expires.timestamp()
    )

    def soon() -> dict[str, Any] | None:
        cond = condition(get(control_plane, "sac", "shortlived", namespace), "ExpiringSoon")
        return cond if cond and cond["status"] == "True" else None

    cond = soon() or wait_for(soon, "ExpiringSoon", timeout=60)
    assert cond["reason"] == "ExpiringSoon"
    assert parse_rfc3339(cond["lastTransitionTime"]) >= expires - timedelta(seconds=25) - timedelta(seconds=1)
    if datetime.now(UTC) < expires - timedelta(seconds=2):
        assert security.token(client_id, secret).status_code == 200
    assert event(control_plane, namespace, "shortlived", "ExpiringSoon") is not None
    assert metric(operator, "credward_operator_credential_expiring_soon", namespace=namespace, name="shortlived") == 1

    def expired() -> dict[str, Any] | None:
        obj = get(control_plane, "sac", "shortlived", namespace)
        cond = condition(obj, "Expired")
        return obj if cond and cond["status"] == "True" else None

    obj = wait_for(expired, "Expired", timeout=90)
    assert datetime.now(UTC) >= expires
    assert security.token(client_id, secret).status_code == 401  # no new tokens past the lifetime
    ready_cond = condition(obj, "Ready")
    assert ready_cond is not None
    assert (ready_cond["status"], ready_cond["reason"]) == ("False", "Expired")
    soon_cond = condition(obj, "ExpiringSoon")
    assert soon_cond is not None
    assert soon_cond["status"] == "False"
    assert "nextRotationTime" not in obj["status"]
    assert metric(operator, "credward_operator_credential_expiring_soon", namespace=namespace, name="shortlived") == 0


def test_operator_metrics_report_the_schedule_and_reconciles(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("measured"), namespace)
    obj = ready(control_plane, namespace, "measured")
    next_at = parse_rfc3339(obj["status"]["nextRotationTime"])
    samples = operator_metrics(operator)
    labels = (("name", "measured"), ("namespace", namespace))
    assert samples[("credward_operator_next_rotation_timestamp_seconds", labels)] == next_at.timestamp()
    assert ("credward_operator_credential_expiry_timestamp_seconds", labels) not in samples  # no lifetime
    assert samples[("credward_operator_secret_in_use_past_grace_callers", labels)] == 0
    assert samples[("credward_operator_reconcile_duration_seconds_count", ())] >= 1
    assert ("credward_operator_queue_depth", ()) in samples
    text = httpx.get(operator.health_url.replace("/healthz", "/metrics"), timeout=10).text
    for family in ("credward_operator_rotation_failures_total", "credward_operator_registration_errors_total"):
        assert f"# TYPE {family} counter" in text
    # A deleted credential keeps no series.
    control_plane.kubectl("delete", "sac", "measured", "-n", namespace)
    wait_for(
        lambda: ("credward_operator_next_rotation_timestamp_seconds", labels) not in operator_metrics(operator) or None,
        "the deleted credential's series to go",
    )


def test_the_cap_holds_while_the_operator_is_down(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    rotation = {"period": "720h", "gracePeriod": "5s", "quietPeriod": "5m", "maxOverlap": "15s"}
    apply(control_plane, credential("orphaned", rotation=rotation), namespace)
    ready(control_plane, namespace, "orphaned")
    first = secret_values(control_plane, namespace, "orphaned")
    client_id, old = first["client-id"], first["client-secret"]
    rotate(control_plane, namespace, "orphaned")
    rotated_away_from(control_plane, namespace, "orphaned", old)
    cap = parse_rfc3339(overlap_status(control_plane, namespace, "orphaned")["activeSecrets"][1]["notAfter"])
    operator.stop()
    try:
        while datetime.now(UTC) < cap + timedelta(seconds=1):
            now = datetime.now(UTC)
            answer = security.token(client_id, old).status_code
            if now < cap - timedelta(seconds=1):
                assert answer == 200
            time.sleep(0.5)
        # Nobody retired it (the Secret still holds it), yet the service refuses it from its cap on.
        assert secret_values(control_plane, namespace, "orphaned")["previous-client-secret"] == old
        assert security.token(client_id, old).status_code == 401
    finally:
        operator.start()

    def retired() -> dict[str, Any] | None:
        values = secret_values(control_plane, namespace, "orphaned")
        return values if "previous-client-secret" not in values else None

    wait_for(retired, "the restarted operator to retire the capped secret", timeout=60)

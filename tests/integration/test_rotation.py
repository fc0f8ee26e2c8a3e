"""Rotation against the real control plane and service: the Secret always holds a secret that gets a token."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from tests.integration.test_operator import credential, decoded, ready
from tests.support.kube import apply, condition, events_for, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess
from credward.domain.timefmt import parse_rfc3339

pytestmark = pytest.mark.integration


def test_timer_rotation_overlaps_then_retires_the_old_secret(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(
        control_plane,
        credential("rot", rotation={"period": "1m", "gracePeriod": "20s", "maxOverlap": "20s"}),
        namespace,
    )
    status = ready(control_plane, namespace, "rot")["status"]
    first_id = status["activeSecrets"][0]["id"]
    next_at = parse_rfc3339(status["nextRotationTime"])
    early = parse_rfc3339(status["lastRotationTime"]) + timedelta(minutes=1) - next_at
    assert timedelta(0) <= early <= timedelta(seconds=3)  # the jitter: at most 5% of the period early
    initial = get(control_plane, "secret", "rot-credentials", namespace)
    assert initial is not None
    client_id, old = decoded(initial)["client-id"], decoded(initial)["client-secret"]

    # Until the old secret is retired, poll the Secret: whatever it holds must get a token, first try.
    new: str | None = None
    not_after: datetime | None = None
    overlap_checked = False
    deadline = time.monotonic() + 110
    while time.monotonic() < deadline:
        secret = get(control_plane, "secret", "rot-credentials", namespace)
        assert secret is not None
        held = decoded(secret)["client-secret"]
        response = security.token(client_id, held)
        assert response.status_code == 200, f"the Secret's secret was refused: {response.text}"
        if held != old and new is None:
            new = held
            assert decoded(secret)["previous-client-secret"] == old
            assert datetime.now(UTC) >= next_at  # not before its time (the jitter is already in next_at)
        if new is not None and not overlap_checked:
            obj = get(control_plane, "sac", "rot", namespace)
            assert obj is not None
            active = obj["status"].get("activeSecrets", [])
            if len(active) == 2:
                assert active[1]["id"] == first_id
                not_after = parse_rfc3339(active[1]["notAfter"])
                rotating = condition(obj, "Rotating")
                assert rotating is not None
                assert rotating["status"] == "True"
                assert first_id in rotating["message"]
                assert active[1]["notAfter"] in rotating["message"]
                held_by_service = security.account(client_id)
                assert held_by_service is not None
                assert [s["id"] for s in held_by_service["secrets"]] == [a["id"] for a in active]
                # During the overlap both secrets get tokens.
                assert security.token(client_id, old).status_code == 200
                assert security.token(client_id, new).status_code == 200
                overlap_checked = True
        if not_after is not None and datetime.now(UTC) > not_after:
            break
        time.sleep(0.3)
    assert new is not None, "the secret was not rotated"
    assert overlap_checked
    assert not_after is not None

    # After the grace period the old secret is refused, the new one still works, and the overlap is closed.
    assert security.token(client_id, old).status_code == 401
    assert security.token(client_id, new).status_code == 200

    def retired() -> dict[str, object] | None:
        obj = get(control_plane, "sac", "rot", namespace)
        cond = condition(obj, "Rotating")
        return obj if obj and cond and cond["status"] == "False" else None

    obj = wait_for(retired, "the old secret to be retired", timeout=15)
    status = obj["status"]
    assert isinstance(status, dict)
    assert [s["id"] for s in status["activeSecrets"]] != [first_id]
    assert len(status["activeSecrets"]) == 1
    after = get(control_plane, "secret", "rot-credentials", namespace)
    assert after is not None
    assert "previous-client-secret" not in decoded(after)
    assert decoded(after)["client-secret"] == new
    reasons = [e["reason"] for e in events_for(control_plane, namespace, "rot")]
    assert "SecretRotated" in reasons
    assert "OldSecretRetired" in reasons
    for value in (old, new):
        assert value not in operator.log_path.read_text()
        assert value not in str(status)


def test_rotate_annotation_rotates_once_per_value(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("manual"), namespace)
    ready(control_plane, namespace, "manual")
    initial = get(control_plane, "secret", "manual-credentials", namespace)
    assert initial is not None
    client_id, old = decoded(initial)["client-id"], decoded(initial)["client-secret"]
    control_plane.kubectl("annotate", "sac", "manual", "-n", namespace, "credward.io/rotate=first")

    def rotated() -> str | None:
        secret = get(control_plane, "secret", "manual-credentials", namespace)
        value = decoded(secret)["client-secret"] if secret else None
        return value if value and value != old else None

    new = wait_for(rotated, "the requested rotation")
    assert security.token(client_id, new).status_code == 200
    assert security.token(client_id, old).status_code == 200  # the default 24h grace period
    obj = get(control_plane, "sac", "manual", namespace)
    rotating = condition(obj, "Rotating")
    assert rotating is not None
    assert rotating["status"] == "True"
    # The same value again (any further reconcile) does not rotate again.
    control_plane.kubectl("annotate", "sac", "manual", "-n", namespace, "unrelated=change")
    time.sleep(3)
    secret = get(control_plane, "secret", "manual-credentials", namespace)
    assert secret is not None
    assert decoded(secret)["client-secret"] == new

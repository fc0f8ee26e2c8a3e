"""Coalesced restarts on rotation against the real control plane, service and operator.

The control plane runs the deployment and replicaset controllers but no nodes: a
rolling restart shows as a new ReplicaSet (the old one's pod never becomes ready, so
it stays). The audit log counts the operator's writes to each workload: one for the
record, one per restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.integration.test_operator import credential, ready
from tests.support.kube import apply, events_for, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import OPERATOR_USER, ChildProcess
from credward.domain.restarts import ANNOTATION_SECRET_DIGEST, ANNOTATION_SECRET_IDS, digest, format_record
from credward.domain.timefmt import parse_rfc3339

pytestmark = pytest.mark.integration

OPT_IN = {"credward.io/restart-on-rotation": "true"}
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


def workload(kind: str, name: str, credentials: list[str], *, opted_in: bool = True) -> dict[str, Any]:
    """The first credential by the injection annotation, the rest as Secret volumes (and one env reference)."""
    first, *others = credentials
    containers: list[dict[str, Any]] = [{"name": "app", "image": "busybox"}]
    if kind == "DaemonSet":  # an environment variable never sees a rotated file: the case restarts exist for
        containers[0]["env"] = [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": f"{others[0]}-credentials", "key": "client-secret"}}}
        ]
        others = others[1:]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {
                "labels": {"app": name, "credward.io/inject": "true"},
                "annotations": {"credward.io/credential": first},
            },
            "spec": {
                "containers": containers,
                "volumes": [{"name": c, "secret": {"secretName": f"{c}-credentials"}} for c in others],
            },
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": OPT_IN if opted_in else {}},
        "spec": spec,
    }


def secret_id(plane: ControlPlane, namespace: str, credential_name: str) -> str:
    secret = get(plane, "secret", f"{credential_name}-credentials", namespace)
    assert secret is not None
    return str(secret["metadata"]["annotations"]["credward.io/secret-id"])


def wait_workload(
    plane: ControlPlane,
    namespace: str,
    kind: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 30.0,
) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        obj = get(plane, kind, name, namespace)
        return obj if obj is not None and check(obj) else None

    return wait_for(found, f"{kind} {name} {what}", timeout=timeout)


def record_of(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SECRET_IDS)


def has_record(value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: record_of(obj) == value


def template_digest(obj: dict[str, Any]) -> str | None:
    return (obj["spec"]["template"]["metadata"].get("annotations") or {}).get(ANNOTATION_SECRET_DIGEST)


def replicasets(plane: ControlPlane, namespace: str, deployment: str) -> list[dict[str, Any]]:
    items = json.loads(plane.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
    return [i for i in items if any(o["name"] == deployment for o in i["metadata"].get("ownerReferences") or ())]


def workload_writes(plane: ControlPlane, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in plane.audit_events()
        if e["user"]["username"] == OPERATOR_USER
        and e["stage"] == "ResponseComplete"
        and e["verb"] in {"patch", "update"}
        and (ref := e.get("objectRef") or {}).get("namespace") == namespace
        and ref.get("resource") == PLURALS[kind]
        and ref.get("name") == name
        and int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]


def writes_of(plane: ControlPlane, namespace: str, kind: str, name: str, count: int) -> list[dict[str, Any]]:
    """The operator's writes to the workload, once at least ``count`` are in the audit log (written after the
    response), exactly ``count`` of them."""

    def enough() -> list[dict[str, Any]] | None:
        writes = workload_writes(plane, namespace, kind, name)
        return writes if len(writes) >= count else None

    writes = wait_for(enough, f"{count} write(s) of {kind} {name} in the audit log")
    assert len(writes) == count, [f"{w['verb']} {w['requestURI']}" for w in writes]
    return writes


def wait_checked(operator: ChildProcess, offset: int, namespace: str, kind: str, name: str) -> None:
    """Until the operator's log (after ``offset``) says it looked at the workload and found it up to date."""
    line = f"{namespace}/{kind}/{name}: restart check: up to date"
    wait_for(lambda: line in operator.log_path.read_text()[offset:], f"the operator to look at {kind} {name}")


@pytest.fixture
def rotating(control_plane: ControlPlane, operator: ChildProcess, namespace: str) -> list[str]:
    names = [f"cred-{i}" for i in range(4)]
    for name in names:
        apply(control_plane, credential(name), namespace)
    for name in names:
        ready(control_plane, namespace, name)
    return names


def test_credentials_rotated_together_restart_each_workload_once_and_an_operator_restart_changes_nothing(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str, rotating: list[str]
) -> None:
    uses = {
        ("Deployment", "web"): rotating,
        ("StatefulSet", "db"): rotating[:2],
        ("DaemonSet", "agent"): rotating[1:],
    }
    for (kind, name), creds in uses.items():
        apply(control_plane, workload(kind, name, creds), namespace)
    apply(control_plane, workload("Deployment", "plain", rotating, opted_in=False), namespace)

    # Seen for the first time: recorded on the workload's metadata, which rolls nothing.
    before = {c: secret_id(control_plane, namespace, c) for c in rotating}
    for (kind, name), creds in uses.items():
        obj = wait_workload(control_plane, namespace, kind, name, lambda o: record_of(o) is not None, "recorded")
        assert record_of(obj) == format_record({c: before[c] for c in creds})
        assert template_digest(obj) is None
        writes_of(control_plane, namespace, kind, name, 1)
    wait_for(lambda: len(replicasets(control_plane, namespace, "web")) == 1, "the Deployment's first ReplicaSet")

    # Every credential rotated in one kubectl call (the requests land within milliseconds).
    control_plane.kubectl("annotate", "sac", *rotating, "-n", namespace, "credward.io/rotate=together")

    def all_rotated() -> dict[str, str] | None:
        ids = {c: secret_id(control_plane, namespace, c) for c in rotating}
        return ids if all(ids[c] != before[c] for c in rotating) else None

    after = wait_for(all_rotated, "every credential to rotate")
    for (kind, name), creds in uses.items():
        want = {c: after[c] for c in creds}
        restarted = format_record(want)
        obj = wait_workload(control_plane, namespace, kind, name, has_record(restarted), "restarted for the rotation")
        assert template_digest(obj) == digest(want)
        writes_of(control_plane, namespace, kind, name, 2)  # the record, then one restart
    # The restart came only once each new secret was in its Secret, while the old one is still accepted.
    for c in rotating:
        secret = get(control_plane, "secret", f"{c}-credentials", namespace)
        assert secret is not None
        assert secret["metadata"]["annotations"]["credward.io/previous-secret-id"] == before[c]
    messages = [e["message"] for e in events_for(control_plane, namespace, "web") if e["reason"] == "RolledOnRotation"]
    assert len(messages) == 1
    assert all(c in messages[0] for c in rotating)
    assert all(e["type"] == "Normal" for e in events_for(control_plane, namespace, "web"))

    # A restarted operator looks at every workload once, and writes nothing.
    operator.stop()
    for key in uses:
        writes_of(control_plane, namespace, *key, 2)
    offset = operator.log_path.stat().st_size
    operator.start()
    for kind, name in uses:
        wait_checked(operator, offset, namespace, kind, name)
    for kind, name in uses:
        current = get(control_plane, kind, name, namespace)
        assert current is not None
        assert template_digest(current) == digest({c: after[c] for c in uses[kind, name]})
        writes_of(control_plane, namespace, kind, name, 2)
    assert len(replicasets(control_plane, namespace, "web")) == 2  # one rolling restart: one new ReplicaSet

    # The workload without the annotation was never touched.
    plain = get(control_plane, "deployment", "plain", namespace)
    assert plain is not None
    assert record_of(plain) is None
    assert template_digest(plain) is None
    assert workload_writes(control_plane, namespace, "Deployment", "plain") == []


def test_a_secret_change_that_is_not_a_rotation_restarts_nothing(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    apply(control_plane, credential("calm"), namespace)
    ready(control_plane, namespace, "calm")
    apply(control_plane, workload("Deployment", "steady", ["calm", "calm"]), namespace)
    wait_for(lambda: record_of(get(control_plane, "deployment", "steady", namespace)), "the Deployment to be recorded")
    offset = operator.log_path.stat().st_size
    # A new label through secretTemplate: the operator rewrites the Secret, the secret stays the same.
    apply(control_plane, credential("calm", secretTemplate={"labels": {"team": "new"}}), namespace)
    wait_workload(
        control_plane,
        namespace,
        "secret",
        "calm-credentials",
        lambda o: (o["metadata"].get("labels") or {}).get("team") == "new",
        "to be rewritten",
    )
    wait_checked(operator, offset, namespace, "Deployment", "steady")
    obj = get(control_plane, "deployment", "steady", namespace)
    assert obj is not None
    assert template_digest(obj) is None
    assert len(workload_writes(control_plane, namespace, "Deployment", "steady")) == 1  # the record only
    assert len(replicasets(control_plane, namespace, "steady")) == 1


def test_no_restart_before_the_new_secret_is_in_the_secret(
    control_plane: ControlPlane, operator: ChildProcess, security_up: SecurityServer, namespace: str
) -> None:
    apply(control_plane, credential("late"), namespace)
    ready(control_plane, namespace, "late")
    apply(control_plane, workload("Deployment", "waiting", ["late", "late"]), namespace)
    wait_for(lambda: record_of(get(control_plane, "deployment", "waiting", namespace)), "the Deployment to be recorded")
    old = secret_id(control_plane, namespace, "late")

    # With the service down the operator cannot register a new secret, so it writes none: no restart either.
    security_up.process.stop()
    control_plane.kubectl("annotate", "sac", "late", "-n", namespace, "credward.io/rotate=now")
    time.sleep(5)
    assert secret_id(control_plane, namespace, "late") == old
    obj = get(control_plane, "deployment", "waiting", namespace)
    assert obj is not None
    assert template_digest(obj) is None
    assert len(workload_writes(control_plane, namespace, "Deployment", "waiting")) == 1  # the record only

    security_up.start()

    def rotated() -> str | None:
        current = secret_id(control_plane, namespace, "late")
        return current if current != old else None

    new = wait_for(rotated, "the rotation", timeout=60)
    obj = wait_workload(
        control_plane, namespace, "deployment", "waiting", lambda o: template_digest(o) is not None, "restarted"
    )
    assert record_of(obj) == format_record({"late": new})
    assert template_digest(obj) == digest({"late": new})
    # The audit log orders the two writes: the Secret with the new secret, then the restart.
    secret_writes = [
        e
        for e in control_plane.audit_events()
        if e["user"]["username"] == OPERATOR_USER
        and e["stage"] == "ResponseComplete"
        and (ref := e.get("objectRef") or {}).get("resource") == "secrets"
        and ref.get("namespace") == namespace
        and ref.get("name") == "late-credentials"
    ]
    record, restart = writes_of(control_plane, namespace, "Deployment", "waiting", 2)
    rotation = next(w for w in secret_writes if w["requestReceivedTimestamp"] > record["stageTimestamp"])
    assert rotation["stageTimestamp"] < restart["requestReceivedTimestamp"]


def test_a_restart_waits_for_a_credential_about_to_rotate(
    control_plane: ControlPlane, operator: ChildProcess, namespace: str
) -> None:
    """Not timing: the second credential rotates tens of seconds after the first, and there is still one restart."""
    apply(control_plane, credential("soon", rotation={"period": "1m", "gracePeriod": "20s"}), namespace)
    apply(control_plane, credential("now"), namespace)
    ready(control_plane, namespace, "now")
    status = ready(control_plane, namespace, "soon")["status"]
    apply(control_plane, workload("Deployment", "both", ["now", "soon"]), namespace)
    wait_workload(control_plane, namespace, "deployment", "both", lambda o: record_of(o) is not None, "recorded")
    first = {c: secret_id(control_plane, namespace, c) for c in ("now", "soon")}
    assert first["soon"] == status["activeSecrets"][0]["id"], "soon rotated before the test could start"
    # Rotate "now" about 30s before "soon" is due: inside the restart's 1m wait, with a wide margin either way.
    soon_at = parse_rfc3339(status["nextRotationTime"])
    wait_for(lambda: soon_at - datetime.now(UTC) <= timedelta(seconds=30), "soon's rotation to be 30s away", timeout=60)
    offset = operator.log_path.stat().st_size
    control_plane.kubectl("annotate", "sac", "now", "-n", namespace, "credward.io/rotate=first")

    def both_rotated() -> dict[str, str] | None:
        ids = {c: secret_id(control_plane, namespace, c) for c in ("now", "soon")}
        return ids if all(ids[c] != first[c] for c in ids) else None

    after = wait_for(both_rotated, "both credentials to rotate (soon on its 1m schedule)", timeout=90)
    obj = wait_workload(
        control_plane, namespace, "deployment", "both", has_record(format_record(after)), "restarted", timeout=90
    )
    assert template_digest(obj) == digest(after)
    writes_of(control_plane, namespace, "Deployment", "both", 2)  # the record, then one restart for both
    log = operator.log_path.read_text()[offset:]
    assert f"{namespace}/Deployment/both: restart check: now rotated; waiting for soon to rotate too" in log

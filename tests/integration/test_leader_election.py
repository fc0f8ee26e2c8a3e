"""Several operator replicas with leader election (a Lease): one acts, a standby takes over when it dies.

Each replica runs as its own user, so the API server's audit log tells their writes apart. The
session's operator (no leader election, every namespace) is paused for these tests: it would act
beside the replicas and hide which of them did what.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import OPERATOR_TEST_ENV
from tests.integration.test_operator import WRITE_VERBS, credential, ready
from tests.support.kube import apply, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess, operator_process
from credward.domain.leadership import LeaseTiming

pytestmark = pytest.mark.integration

LEASE = "credward-operator"
TIMING = LeaseTiming()  # the defaults: what a user gets


@pytest.fixture
def session_operator_paused(operator: ChildProcess) -> Iterator[None]:
    operator.stop()
    yield
    operator.start()


def replica(plane: ControlPlane, security: SecurityServer, namespace: str, name: str, logs: Path) -> ChildProcess:
    return operator_process(
        plane,
        security_base_url=security.base_url,
        hash_key_file=security.hash_key_file,
        token_file=security.token_file,
        log_path=logs / f"{name}.log",
        env={
            **OPERATOR_TEST_ENV,
            "KUBECONFIG": str(plane.user_kubeconfig(f"credward-{name}", ["system:masters"])),
            "CREDWARD_LEADER_ELECTION": "true",
            "CREDWARD_POD_NAMESPACE": namespace,
            "CREDWARD_POD_NAME": name,
        },
    )


def holder(plane: ControlPlane, namespace: str) -> str | None:
    lease = get(plane, "lease", LEASE, namespace)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def writes_by(plane: ControlPlane, name: str, namespace: str) -> list[dict[str, Any]]:
    """``name``'s completed writes into ``namespace``, the Lease aside."""
    return [
        e
        for e in plane.audit_events()
        if e["user"]["username"] == f"credward-{name}"
        and e["verb"] in WRITE_VERBS
        and e["stage"] == "ResponseComplete"
        and (e.get("objectRef") or {}).get("namespace") == namespace
        and (e.get("objectRef") or {}).get("resource") != "leases"
    ]


def test_standby_takes_over_when_the_leader_is_killed(
    control_plane: ControlPlane,
    crds: list[str],
    security: SecurityServer,
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        a = stack.enter_context(replica(control_plane, security, namespace, "op-a", tmp_path))
        wait_for(lambda: holder(control_plane, namespace) == "op-a", "op-a to lead")
        # The standby is healthy (ChildProcess waits for /healthz) while it waits for the Lease.
        stack.enter_context(replica(control_plane, security, namespace, "op-b", tmp_path))
        wait_for(lambda: "waiting to lead" in (tmp_path / "op-b.log").read_text(), "op-b to wait as a standby")

        apply(control_plane, credential("before"), namespace)
        ready(control_plane, namespace, "before", timeout=60)
        assert writes_by(control_plane, "op-a", namespace)
        assert holder(control_plane, namespace) == "op-a"
        assert writes_by(control_plane, "op-b", namespace) == []  # the standby acted on nothing

        a.kill()  # no cleanup: the Lease is not released, it has to expire
        killed = time.monotonic()
        wait_for(
            lambda: holder(control_plane, namespace) == "op-b",
            "op-b to take the Lease",
            timeout=TIMING.takeover_within.total_seconds() + 30,
        )
        took_over = time.monotonic() - killed
        apply(control_plane, credential("after"), namespace)
        ready(control_plane, namespace, "after", timeout=60)
        # The new leader wrote the new credential's Secret (server-side apply) and nothing of the one before.
        secrets = {
            e["objectRef"].get("name")
            for e in writes_by(control_plane, "op-b", namespace)
            if e["objectRef"]["resource"] == "secrets"
        }
        assert secrets == {"after-credentials"}
        # A Lease that is not renewed cannot be taken before it expires (the rule that prevents double action).
        assert took_over >= TIMING.lease_duration.total_seconds() - TIMING.retry_period.total_seconds()
        print(f"takeover after kill -9: {took_over:.1f}s")  # the measured figure, shown with -s


def test_a_leader_that_cannot_renew_exits(
    control_plane: ControlPlane,
    crds: list[str],
    security: SecurityServer,
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Someone else holds the Lease now (as after a partition): the old leader must stop acting, by exiting."""
    with replica(control_plane, security, namespace, "op-a", tmp_path) as a:
        wait_for(lambda: holder(control_plane, namespace) == "op-a", "op-a to lead")

        def usurp() -> int | None:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            patch = {"spec": {"holderIdentity": "intruder", "renewTime": now}}
            control_plane.kubectl("patch", "lease", LEASE, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
            return a.exit_code

        code = wait_for(usurp, "op-a to exit", timeout=TIMING.renew_deadline.total_seconds() + 60, interval=1.0)
        assert code == 1
        assert "lost the leader Lease" in (tmp_path / "op-a.log").read_text()
        assert holder(control_plane, namespace) == "intruder"

"""Several operator replicas with leader election (a Lease): one acts, a standby takes over when it dies.

Each replica runs as its own user, so the API server's audit log tells their writes apart. The
session's operator (no leader election, every namespace) is paused for these tests: it would act
beside the replicas and hide which of them did what.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import OPERATOR_TEST_ENV
from tests.integration.test_operator import WRITE_VERBS, credential, ready
from tests.integration.webhook.helpers import INJECT, create, pod
from tests.support.kube import apply, get, wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port
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


def replica(
    plane: ControlPlane,
    security: SecurityServer,
    namespace: str,
    name: str,
    logs: Path,
    *,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> ChildProcess:
    return operator_process(
        plane,
        security_base_url=security.base_url,
        hash_key_file=security.hash_key_file,
        token_file=security.token_file,
        log_path=logs / f"{name}.log",
        extra_args=extra_args,
        env={
            **OPERATOR_TEST_ENV,
            "KUBECONFIG": str(plane.user_kubeconfig(f"credward-{name}", ["system:masters"])),
            "CREDWARD_LEADER_ELECTION": "true",
            "CREDWARD_POD_NAMESPACE": namespace,
            "CREDWARD_POD_NAME": name,
            **(env or {}),
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


def configuration_url(plane: ControlPlane, name: str) -> str | None:
    """Where the mutating configuration sends the API server (scheme, host and port)."""
    proc = plane.kubectl("get", "mutatingwebhookconfiguration", name, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    url = str(json.loads(proc.stdout)["webhooks"][0]["clientConfig"]["url"])
    return "/".join(url.split("/")[:3])


def webhook_health(plane: ControlPlane, configuration: str, port: int) -> bool:
    """GET /healthz over HTTPS, trusting only the caBundle the configuration publishes."""
    proc = plane.kubectl("get", "mutatingwebhookconfiguration", configuration, "-o", "json")
    bundle = base64.b64decode(json.loads(proc.stdout)["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    context = ssl.create_default_context(cadata=bundle)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def admission_refusal(plane: ControlPlane, namespace: str) -> str | None:
    """The refusal of an opted-in pod naming a credential that does not exist, once a webhook answers."""
    proc = create(plane, namespace, pod("x", labels=INJECT, annotations={"credward.io/credential": "missing"}))
    assert proc.returncode != 0, "admitted a pod whose credential does not exist"
    return None if "failed calling webhook" in proc.stderr else proc.stderr


def test_every_replica_serves_the_webhook_and_only_the_leader_manages_it(
    control_plane: ControlPlane,
    crds: list[str],
    security: SecurityServer,
    session_operator_paused: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    configuration = home = f"credward-ha-{secrets.token_hex(3)}"  # credward's own namespace: pods elsewhere
    control_plane.kubectl("create", "namespace", home)
    ports = {"op-a": free_port(), "op-b": free_port()}

    def webhook_replica(name: str) -> ChildProcess:
        return replica(
            control_plane,
            security,
            home,
            name,
            tmp_path,
            extra_args=(f"--webhook-port={ports[name]}",),
            env={
                "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
                "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{ports[name]}",
                "CREDWARD_WEBHOOK_NAMESPACE": home,
                "CREDWARD_WEBHOOK_CONFIGURATION": configuration,
            },
        )

    try:
        with ExitStack() as stack:
            a = stack.enter_context(webhook_replica("op-a"))
            wait_for(lambda: configuration_url(control_plane, configuration), "the leader to publish the configuration")
            assert configuration_url(control_plane, configuration) == f"https://127.0.0.1:{ports['op-a']}"
            stack.enter_context(webhook_replica("op-b"))
            # The standby serves admission with the certificate the leader stored, and writes nothing.
            wait_for(lambda: webhook_health(control_plane, configuration, ports["op-b"]), "op-b's webhook")
            assert holder(control_plane, home) == "op-a"
            standby_writes = [
                e
                for e in control_plane.audit_events()
                if e["user"]["username"] == "credward-op-b"
                and e["verb"] in WRITE_VERBS
                and (e.get("objectRef") or {}).get("resource") != "leases"
                # This test's objects only: the audit log spans the session, and other tests reuse the name op-b.
                and (
                    (e.get("objectRef") or {}).get("namespace") in (home, namespace)
                    or (e.get("objectRef") or {}).get("name") == configuration
                )
            ]
            assert standby_writes == []

            a.kill()
            # Nobody leads now: a configuration that disappears stays away, since the standby manages nothing...
            control_plane.kubectl("delete", "mutatingwebhookconfiguration", configuration)
            wait_for(
                lambda: holder(control_plane, home) == "op-b",
                "op-b to take the Lease",
                timeout=TIMING.takeover_within.total_seconds() + 30,
            )
            # ...until it leads: then it publishes the configuration again (here with its own URL).
            wait_for(
                lambda: configuration_url(control_plane, configuration) == f"https://127.0.0.1:{ports['op-b']}",
                "the new leader to publish the configuration",
            )
            refusal = wait_for(
                lambda: admission_refusal(control_plane, namespace),
                "op-b to answer admission",
            )
            assert "failed calling webhook" not in refusal  # answered (and refused: there is no such credential)
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, configuration, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "namespace", home, "--wait=false", check=False)

"""The webhook served by the operator itself (``credward operator run --webhook-port``), and what an outage does."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.conftest import OPERATOR_TEST_ENV
from tests.integration.webhook.helpers import INJECT, create, credential, pod, refused, stored
from tests.support.kube import wait_for
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port
from credward.devcluster.processes import ChildProcess, operator_process


@dataclass
class OperatorWithWebhook:
    process: ChildProcess
    namespace: str
    configuration: str


@pytest.fixture(scope="module")
def operator_with_webhook(
    control_plane: ControlPlane, crds: list[str], security: SecurityServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorWithWebhook]:
    namespace = f"credward-op-{secrets.token_hex(3)}"
    configuration = f"credward-op-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", namespace)
    port = free_port()
    proc = operator_process(
        control_plane,
        security_base_url=security.base_url,
        hash_key_file=security.hash_key_file,
        token_file=security.token_file,
        log_path=tmp_path_factory.mktemp("operator-webhook") / "operator.log",
        extra_args=[f"--webhook-port={port}"],
        env={
            **OPERATOR_TEST_ENV,
            "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
            "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{port}",
            "CREDWARD_WEBHOOK_NAMESPACE": namespace,
            "CREDWARD_WEBHOOK_CONFIGURATION": configuration,
        },
    )
    proc.start()
    try:
        wait_for(
            lambda: (
                control_plane.kubectl("get", "mutatingwebhookconfiguration", configuration, check=False).returncode == 0
            ),
            "the operator's webhook configurations",
        )
        yield OperatorWithWebhook(proc, namespace, configuration)
    finally:
        proc.stop()
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, configuration, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_operator_injects_opted_in_pods(
    control_plane: ControlPlane, operator_with_webhook: OperatorWithWebhook, security: SecurityServer, namespace: str
) -> None:
    credential(control_plane, namespace, "served")
    obj = wait_for(
        lambda: (
            (
                proc := create(
                    control_plane,
                    namespace,
                    pod("served", labels=INJECT, annotations={"credward.io/credential": "served"}),
                )
            )
            and proc.returncode == 0
            and json.loads(proc.stdout)
        ),
        "the pod to be admitted (the API server sees the new configuration within moments)",
    )
    env = {e["name"]: e.get("value") for e in obj["spec"]["containers"][0]["env"]}
    assert env["SECURITY_BASE_URL"] == security.base_url
    assert env["CLIENT_SECRET_PATH"] == "/var/run/secrets/credward.io/served/client-secret"


def test_an_outage_refuses_only_opted_in_pods(
    control_plane: ControlPlane, operator_with_webhook: OperatorWithWebhook, namespace: str
) -> None:
    credential(control_plane, namespace, "down")
    operator_with_webhook.process.stop()
    try:
        # The configurations stay while no replica answers: an opted-in pod must not start without its credential...
        message = refused(
            control_plane, namespace, pod("needs", labels=INJECT, annotations={"credward.io/credential": "down"})
        )
        assert 'failed calling webhook "inject.pods.credward.io"' in message
        # ...and every other pod is admitted as if credward were not there.
        assert "env" not in stored(control_plane, namespace, pod("other"))["spec"]["containers"][0]
    finally:
        operator_with_webhook.process.start()

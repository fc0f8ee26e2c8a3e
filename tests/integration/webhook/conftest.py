"""The webhook as its own process (``python -m credward.webhook``) against the session's control plane.

It runs exactly as the operator runs it, minus the reconcile loop, so these tests
do not depend on the operator: credentials get their status straight through the
status subresource. One webhook per test module (``module`` scope), each with its
own namespace, port and configuration name; the configurations are removed when
it stops, so nothing outlives the module.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.kube import get

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port

# What the webhook writes into pods as SECURITY_BASE_URL; the webhook never calls it.
SECURITY_BASE_URL = "http://credward-security.test:9000"


WEBHOOK_USER = "credward-webhook"


@dataclass
class WebhookProcess:
    plane: ControlPlane
    namespace: str  # the webhook's own namespace (never admitted)
    port: int
    configuration: str
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    secret: str = "credward-webhook-tls"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls_secret(self) -> dict[str, bytes]:
        obj = get(self.plane, "secret", self.secret, self.namespace)
        assert obj is not None
        return {k: base64.b64decode(v) for k, v in obj["data"].items()}

    def healthy(self) -> bool:
        try:
            bundle = self.tls_secret()["ca.crt"].decode()
        except (AssertionError, KeyError, Exception):
            return False
        ctx = ssl.create_default_context(cadata=bundle)
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=ctx) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def configured(self) -> bool:
        proc = self.plane.kubectl("get", "mutatingwebhookconfiguration", self.configuration, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        hooks = json.loads(proc.stdout)["webhooks"]
        return all(h["clientConfig"].get("caBundle") for h in hooks)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "credward.webhook", "--remove-configurations"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"the webhook exited with {self.popen.returncode}:\n{self.log_path.read_text()}")
            if self.healthy() and self.configured():
                # The API server picks up a new configuration through a watch: give it a moment.
                time.sleep(1.0)
                return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the webhook did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.popen = None


def start_webhook(
    plane: ControlPlane, tmp: Path, label: str, namespace: str | None = None, **settings: str
) -> Generator[WebhookProcess, None, None]:
    """A webhook process in its own new namespace, or as another replica in ``namespace`` (sharing its Secret)."""
    own = namespace is None
    namespace = namespace or f"credward-{label}-{secrets.token_hex(3)}"
    if own:
        plane.kubectl("create", "namespace", namespace)
    port = free_port()
    configuration = f"credward-{label}-{secrets.token_hex(3)}"
    env = {
        "KUBECONFIG": str(plane.user_kubeconfig(WEBHOOK_USER, ["system:masters"])),
        "CREDWARD_SECURITY_BASE_URL": SECURITY_BASE_URL,
        "CREDWARD_WEBHOOK_PORT": str(port),
        "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
        "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{port}",
        "CREDWARD_WEBHOOK_NAMESPACE": namespace,
        "CREDWARD_WEBHOOK_CONFIGURATION": configuration,
        "CREDWARD_WEBHOOK_SYNC_INTERVAL": "1s",
        "CREDWARD_WEBHOOK_OVERLAP": "3s",
        **{f"CREDWARD_WEBHOOK_{k.upper()}": v for k, v in settings.items()},
    }
    proc = WebhookProcess(plane, namespace, port, configuration, tmp / f"webhook-{label}.log", env)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        if own:
            plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookProcess]:
    """The webhook with default certificate lifetimes, for one test module."""
    yield from start_webhook(control_plane, tmp_path_factory.mktemp("webhook"), "wh")

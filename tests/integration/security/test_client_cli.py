"""``credward token|decode|validate|status`` as a user runs them: subprocesses against the real service
(and, for ``status``, the real local control plane)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from tests.integration.conftest import sqlite_url
from tests.integration.security.conftest import Service
from tests.integration.security.test_client_support import KubeletMount, secret_values
from tests.support.kube import apply

from credward.devcluster import ControlPlane

pytestmark = pytest.mark.integration

AUDIENCE = "https://storage.example"


@pytest.fixture(scope="module")
def backend_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_url(tmp_path_factory.mktemp("cli-store") / "store.db")


def credward(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CLIENT_ID", "CLIENT_SECRET_PATH", "SECURITY_BASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "credward.cli", *args],
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_then_decode_then_validate(service: Service, tmp_path: Path) -> None:
    client = service.register()
    mount = KubeletMount(tmp_path / "credentials", secret_values(service, client))
    minted = credward("token", env={"CLIENT_SECRET_PATH": str(mount.secret_path)})
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert client.secret not in minted.stdout + minted.stderr

    decoded = credward("decode", stdin=token)
    assert decoded.returncode == 0, decoded.stderr
    assert "NOT VERIFIED" in decoded.stderr
    shown = json.loads(decoded.stdout)
    assert shown["claims"]["client_id"] == client.client_id
    assert shown["header"]["kid"]
    assert set(shown["times"]) == {"iat", "nbf", "exp"}

    env = {"SECURITY_BASE_URL": service.base_url}
    allowed = credward("validate", "--verb", "read", "--path", "/data/x", "--audience", AUDIENCE, token, env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "allowed: read /data/x (granted by storage.read:/data)" in allowed.stdout
    denied = credward("validate", "--verb", "write", "--path", "/data/x", "--audience", AUDIENCE, token, env=env)
    assert denied.returncode == 1
    assert "refused: not authorized (scope)" in denied.stdout
    other = credward(
        "validate", "--verb", "read", "--path", "/data", "--audience", "https://other.example", token, env=env
    )
    assert other.returncode == 1
    assert "refused: token refused (aud)" in other.stdout
    no_role = credward("validate", "--verb", "read", "--path", "/data", "--role", "admin", token, env=env)
    assert no_role.returncode == 1
    assert "(role)" in no_role.stdout
    no_issuer = credward("validate", "--verb", "read", "--path", "/data", token)
    assert no_issuer.returncode == 2


def test_validate_names_the_expired_check(service: Service) -> None:
    response = service.token(service.register(ttl=1))
    token = response.json()["access_token"]
    time.sleep(2.1)
    result = credward(
        "validate", "--verb", "read", "--path", "/data", "--leeway", "0", "--issuer", service.base_url, token
    )
    assert result.returncode == 1
    assert "token refused (exp)" in result.stdout


def test_token_endpoint_refusal_exits_1_without_the_secret(service: Service, tmp_path: Path) -> None:
    client = service.register()
    mount = KubeletMount(tmp_path / "c", {**secret_values(service, client), "client-secret": "cws_not-the-secret"})
    result = credward("token", env={"CLIENT_SECRET_PATH": str(mount.secret_path)})
    assert result.returncode == 1
    assert "invalid_client" in result.stderr
    assert "cws_not-the-secret" not in result.stderr
    assert credward("token").returncode == 2  # nothing configured: says what is missing
    assert "CLIENT_SECRET_PATH" in credward("token").stderr


def test_status_shows_both_sides(
    service: Service, control_plane: ControlPlane, crds: list[str], namespace: str, tmp_path: Path
) -> None:
    client = service.register(audiences=(AUDIENCE,), groups=("/atlas/prod", "/atlas"), ttl=300)
    apply(
        control_plane,
        {
            "apiVersion": "credward.io/v1alpha1",
            "kind": "ServiceAccountCredential",
            "metadata": {"name": "pipeline"},
            "spec": {
                "displayName": "pipeline",
                "audiences": ["https://elsewhere.example"],
                "groups": ["/atlas/prod", "/atlas"],
                "tokenTTL": "5m",
            },
        },
        namespace,
    )
    apply(
        control_plane,
        {
            "apiVersion": "credward.io/v1alpha1",
            "kind": "RoleBinding",
            "metadata": {"name": "rb"},
            "spec": {
                "serviceAccount": "pipeline",
                "roles": ["reader"],
                "permissions": [{"verbs": ["read"], "path": ["data"]}],
            },
        },
        namespace,
    )
    ready = {"type": "Ready", "status": "True", "reason": "SecretReady", "message": "ok"}
    status = {
        "clientId": client.client_id,
        "identity": f"{client.client_id}@clients.127.0.0.1",
        "activeSecrets": [{"id": client.secret_id, "createdAt": "2026-01-01T00:00:00Z"}],
        "conditions": [{**ready, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }
    control_plane.kubectl(
        "patch",
        "sac",
        "pipeline",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    token_file = tmp_path / "admin-token"
    token_file.write_text(service.admin_token)
    args = ["status", "pipeline", "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig)]
    args += ["--security-base-url", service.base_url, "--admin-token-file", str(token_file)]
    table = credward(*args)
    assert table.returncode == 0, table.stderr
    lines = {
        line.split()[0] if not line.startswith("condition") else "condition": line
        for line in table.stdout.splitlines()
        if line.strip()
    }
    assert "security service:" not in table.stdout, table.stdout  # the service's view was read
    assert lines["clientId"].split() == ["clientId", client.client_id, client.client_id]
    assert lines["secretIds"].split() == ["secretIds", client.secret_id, client.secret_id]
    assert lines["roleBindings"].split() == ["roleBindings", "rb", "rb"]
    assert "!=" not in lines["identity"]
    assert "!=" in lines["audiences"]  # the spec says elsewhere.example, the service holds storage.example
    assert "True (SecretReady)" in lines["condition"]
    assert client.secret not in table.stdout + table.stderr
    assert service.admin_token not in table.stdout + table.stderr

    as_json = json.loads(credward(*args, "-o", "json").stdout)
    rows = {r["field"]: r for r in as_json["rows"]}
    assert rows["tokenTTL"] == {"field": "tokenTTL", "kubernetes": "300s", "service": "300s", "agrees": True}
    assert rows["roles"]["agrees"] is True

    without_admin = credward("status", "pipeline", "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig))
    assert without_admin.returncode == 0
    assert "not asked" in without_admin.stdout
    missing = credward("status", "nope", "-n", namespace, "--kubeconfig", str(control_plane.kubeconfig))
    assert missing.returncode == 1
    assert "not found" in missing.stderr

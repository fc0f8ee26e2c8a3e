"""`make demo`'s path, as a newcomer runs it: one command, the operator doing the work, no secret on screen."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from credward.domain.claims import CLOCK_SKEW_ALLOWANCE

pytestmark = pytest.mark.e2e


def test_demo_registers_syncs_and_mints_a_verified_token_without_printing_the_secret(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "credward", "dev", "demo", f"--state-dir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    # The conditions turned, reported by the operator (nobody registered the account by hand).
    for line in (
        "ServiceAccountCredential/ci-pipeline: Registered=True (Registered)",
        "ServiceAccountCredential/ci-pipeline: Ready=True (SecretReady)",
        "RoleBinding/ci-pipeline-store: Synced=True (Synced)",
        "RoleBinding/ci-pipeline-reports: Synced=True (Synced)",
    ):
        assert line in output, output[-4000:]
    assert '"client-secret": "<hidden>"' in output

    # The example Deployment's pod as the API server stored it, after the operator's webhook.
    assert '"mountPath": "/var/run/secrets/credward.io/ci-pipeline"' in output
    assert '"value": "/var/run/secrets/credward.io/ci-pipeline/client-secret"' in output
    claims = json.loads(re.search(r"claims:\n(\{.*?\n\})", output, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert claims["sub"] == f"{claims['client_id']}@clients.127.0.0.1"
    assert claims["aud"] == "https://store.example.org"
    assert sorted(claims["roles"]) == ["builder", "reporter"]  # the union of both bindings
    assert set(claims["scope"].split()) == {
        "storage.read:/store/artifacts",
        "storage.read:/store/builds",
        "storage.modify:/store/builds",
        "storage.read:/reports/ci",
        "storage.modify:/reports/ci",
    }
    assert claims["exp"] - claims["iat"] == 300 + CLOCK_SKEW_ALLOWANCE  # tokenTTL 5m; iat backdated
    assert claims["wlcg.groups"] == ["/ci/builders", "/ci"]

    assert "read /store/artifacts/app-1.2.tar: allowed by scope storage.read:/store/artifacts" in output
    assert "write /store/artifacts/x: refused (scope)" in output

    mount = tmp_path / "mount" / "ci-pipeline"
    assert (mount / "client-secret").is_symlink()  # the kubelet's layout
    assert (mount / "..data").is_symlink()
    secret_value = (mount / "client-secret").read_text()
    assert len(secret_value) >= 43
    assert secret_value not in output
    for log in tmp_path.rglob("*.log"):
        assert secret_value not in log.read_text(errors="replace"), log.name

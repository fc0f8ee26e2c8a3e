"""`make demo`'s path, as a newcomer runs it: one command, a token at the end, no secret on screen."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_demo_mints_a_verified_token_without_printing_the_secret(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "credward", "dev", "demo", f"--state-dir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "ci-pipeline-credentials" in output
    assert '"client-secret": "<hidden>"' in output
    # The example Deployment's pod as the API server stored it, after the operator's webhook.
    assert '"mountPath": "/var/run/secrets/credward.io/ci-pipeline"' in output
    assert '"value": "/var/run/secrets/credward.io/ci-pipeline/client-secret"' in output
    claims = json.loads(re.search(r"claims:\n(\{.*?\n\})", output, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert claims["sub"].endswith("@clients.127.0.0.1")
    assert claims["client_id"] in claims["sub"]
    assert "builder" in claims["roles"]
    assert "storage.modify:/store/builds" in claims["scope"].split()
    assert claims["exp"] - claims["iat"] == 300
    secret_value = (tmp_path / "mount" / "ci-pipeline" / "client-secret").read_text()
    assert len(secret_value) >= 43
    assert secret_value not in output
    for log in tmp_path.rglob("*.log"):
        assert secret_value not in log.read_text(errors="replace"), log.name

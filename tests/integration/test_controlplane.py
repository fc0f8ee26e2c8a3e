"""The local control plane itself: RBAC is on, writes are audited, startup failures are explained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from credward.devcluster import ControlPlane, ControlPlaneError

pytestmark = pytest.mark.integration


def test_unprivileged_user_is_forbidden_by_rbac(control_plane: ControlPlane) -> None:
    kubeconfig = control_plane.user_kubeconfig("nobody")
    proc = control_plane.kubectl("get", "secrets", "-A", kubeconfig=kubeconfig, check=False)
    assert proc.returncode != 0
    assert 'User "nobody" cannot list resource "secrets"' in proc.stderr


def test_writes_are_audited_by_user_without_secret_data(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "secret", "generic", "audited", "-n", namespace, "--from-literal=k=sensitive-value")
    events = [
        e
        for e in control_plane.audit_events()
        if e["verb"] == "create" and e.get("objectRef", {}).get("name") == "audited"
    ]
    assert len(events) == 1
    assert events[0]["user"]["username"] == "credward-dev-admin"
    assert "sensitive-value" not in control_plane.audit_log.read_text()


def test_startup_failure_names_component_and_log(control_plane: ControlPlane, tmp_path: Path) -> None:
    broken = dataclasses.replace(control_plane.binaries, etcd=Path("/bin/false"))
    plane = ControlPlane(tmp_path / "broken", binaries=broken, startup_timeout=10)
    with pytest.raises(ControlPlaneError) as info:
        plane.start()
    message = str(info.value)
    assert "etcd exited with code 1 while starting" in message
    assert str(tmp_path / "broken" / "logs" / "etcd.log") in message

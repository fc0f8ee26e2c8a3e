"""Fixtures shared by every tier.

The control plane is real (etcd + kube-apiserver + kube-controller-manager built
from pinned Go modules) and session-scoped; each test gets a fresh namespace.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess, operator_process

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
# Where Secrets say tokens come from in operator tests that do not need a live service.
SECURITY_BASE_URL = "http://credward-security.test:9000"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/<tier>/ carry that tier's marker, so `-m unit` selects by directory too."""
    for item in items:
        parts = Path(str(item.path)).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real control plane for the whole session."""
    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> list[str]:
    """Apply crds/*.yaml (server-side) and wait until each CRD is Established; return their names."""
    return control_plane.install_crds(CRD_DIR)


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{secrets.token_hex(3)}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    control_plane.kubectl("create", "namespace", name)
    # The controller manager gives every namespace a 'default' ServiceAccount; Pods need it.
    deadline = time.monotonic() + 30
    while control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name} got no default ServiceAccount")
        time.sleep(0.2)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcess]:
    """``credward operator run -v`` against the control plane, as user credward-operator (see the audit log).

    DEBUG logging, so that the tests which look for secrets in the log cover the most verbose output.
    """
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with operator_process(
        control_plane, security_base_url=SECURITY_BASE_URL, log_path=log_path, extra_args=["-v"]
    ) as proc:
        yield proc

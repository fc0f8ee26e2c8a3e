"""Fixtures shared by every tier.

The control plane is real (etcd + kube-apiserver + kube-controller-manager built
from pinned Go modules) and session-scoped; each test gets a fresh namespace.
The operator runs against it and against the real security service (SQLite),
both session-scoped; tests that stop or wipe the service start it again.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess, operator_process
from tests.support.service import SecurityServer

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
# Operator settings for tests: notice the service's return within a second, short backoff and cleanup timeout.
OPERATOR_TEST_ENV = {
    "CREDWARD_INFO_INTERVAL": "1s",
    "CREDWARD_BACKOFF_MAX": "4s",
    "CREDWARD_CLEANUP_TIMEOUT": "20s",
}


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
def security(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityServer]:
    """``credward security serve`` (dev mode, SQLite in tmp, bearer-file admin auth) for the whole session."""
    with SecurityServer(tmp_path_factory.mktemp("security")) as server:
        yield server


@pytest.fixture
def security_up(security: SecurityServer) -> Iterator[SecurityServer]:
    """The session's service, started again after a test that stopped it (even when that test failed)."""
    yield security
    if not security.process.running:
        security.start()


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, crds: list[str], security: SecurityServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcess]:
    """``credward operator run -v`` against the control plane and the service, as user credward-operator.

    DEBUG logging, so that the tests which look for secrets in the log cover the most verbose output.
    """
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with operator_process(
        control_plane,
        security_base_url=security.base_url,
        hash_key_file=security.hash_key_file,
        token_file=security.token_file,
        log_path=log_path,
        extra_args=["-v"],
        env=OPERATOR_TEST_ENV,
    ) as proc:
        yield proc

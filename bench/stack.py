"""What the end-to-end benchmarks share: a local control plane with the real service and operator, and a wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port
from credward.devcluster.processes import operator_process, security_process

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@contextmanager
def local_stack(state: Path) -> Iterator[tuple[ControlPlane, str]]:
    """The plane (CRDs installed), the security service (SQLite) and the operator; yields the plane and the base URL."""
    with ControlPlane(state / "controlplane") as plane:
        plane.install_crds(REPO / "crds")
        port = free_port()
        security, token_file, hash_key = security_process(state, port)
        base_url = f"http://127.0.0.1:{port}"
        operator = operator_process(
            plane,
            security_base_url=base_url,
            hash_key_file=hash_key,
            token_file=token_file,
            log_path=state / "logs" / "operator.log",
        )
        with security, operator:
            yield plane, base_url


def wait_for(check: Callable[[], T], what: str, timeout: float, interval: float) -> T:
    """The first truthy value of ``check()`` within ``timeout`` seconds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(what)

"""An operator killed (SIGKILL) at any step of a rotation never strands a workload, and converges once back.

The session's operator is stopped for these tests; each runs its own operator, watching only the test's
namespace, against the real control plane and the real security service. One test arms a named fault point
(``CREDWARD_FAULT_POINT``, :mod:`credward.operator.faults`) per run; another kills the operator at seeded random
moments while rotations run. At every look the Secret's ``client-secret`` must get a token from the real token
endpoint, and the service may hold no later deadline for a secret than the Secret records.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import OPERATOR_TEST_ENV
from tests.integration.test_operator import credential, ready
from tests.support.kube import apply, wait_for
from tests.support.rotation import Watch
from tests.support.service import SecurityServer

from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess, operator_process
from credward.operator import faults

pytestmark = pytest.mark.integration

GRACE = 6.0  # seconds: the tests keep a killed operator down for longer than this
ROTATION = {"period": "1m", "gracePeriod": f"{GRACE:.0f}s"}
KILLS = 15  # about 75 s: each cycle is alive 0.3-4 s, then down 0-4 s
StartOperator = Callable[..., ChildProcess]


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str, tmp_path: Path
) -> Iterator[StartOperator]:
    """Operators of this test alone (the session's is stopped meanwhile and started again afterwards)."""
    operator.stop()
    started: list[ChildProcess] = []

    def start(fault: str | None = None, *, wait_ready: bool = True) -> ChildProcess:
        env = {**OPERATOR_TEST_ENV, **({faults.ENV: fault} if fault else {})}
        proc = operator_process(
            control_plane,
            security_base_url=security.base_url,
            hash_key_file=security.hash_key_file,
            token_file=security.token_file,
            log_path=tmp_path / "operator.log",
            env=env,
            namespaces=[namespace],
        )
        started.append(proc)
        proc.start(wait_ready=wait_ready)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
        operator.start()


def annotate_rotate(plane: ControlPlane, namespace: str, name: str, value: str) -> None:
    plane.kubectl("annotate", "--overwrite", "sac", name, "-n", namespace, f"credward.io/rotate={value}")


@pytest.mark.parametrize("point", faults.POINTS, ids=[p.replace(":", "-") for p in faults.POINTS])
def test_a_kill_at_each_step_never_strands_the_workload(
    control_plane: ControlPlane, security: SecurityServer, namespace: str, start_operator: StartOperator, point: str
) -> None:
    step = point.split(":")[0]
    watch = Watch(control_plane, security, namespace, "crash")
    armed = start_operator(point)
    apply(control_plane, credential("crash", rotation=ROTATION), namespace)
    if step != "create":
        ready(control_plane, namespace, "crash")
        watch.check()
        annotate_rotate(control_plane, namespace, "crash", "now")  # a rotation, then its retirement GRACE later
    code = armed.wait_exit(timeout=60 + GRACE)
    assert code == -signal.SIGKILL, f"the operator armed at {point} did not kill itself (exit {code})"
    assert f"fault point {point} reached" in armed.log_path.read_text()

    # At the moment of death, and after staying down for longer than the grace period.
    data = watch.check()
    if point == "create:registered":
        assert data is None  # a secret the service may not hold is never where a workload mounts it
    else:
        assert data is not None
    time.sleep(GRACE + 2)
    assert (watch.check() is None) == (data is None)

    start_operator()
    wait_for(watch.converged, f"convergence after a kill at {point}", timeout=60 + 2 * GRACE, interval=0.5)
    checks = watch.checks
    assert checks >= (1 if data is None else 3), f"{checks} looks found a Secret"


def test_kills_at_random_moments_during_rotations(
    control_plane: ControlPlane, security: SecurityServer, namespace: str, start_operator: StartOperator
) -> None:
    """Seeded: a failure names its seed, and the same seed replays the same kill schedule."""
    rng = random.Random(11)
    names = ["r0", "r1", "r2"]
    watches = [
        Watch(control_plane, security, namespace, n, probe_address=f"127.0.{i + 3}.2") for i, n in enumerate(names)
    ]
    proc = start_operator()
    for n in names:
        apply(control_plane, credential(n, rotation={"period": "1m", "gracePeriod": "5s"}), namespace)
    for n in names:
        ready(control_plane, namespace, n)
    kills, requests = 0, 0
    while kills < KILLS:
        # Alive for 0.3-4 s while rotations are asked for and checked, then SIGKILL, down for 0-4 s.
        alive_until = time.monotonic() + rng.uniform(0.3, 4.0)
        while time.monotonic() < alive_until:
            for n, watch in zip(names, watches, strict=True):
                data = watch.check()
                assert data is not None
                if rng.random() < 0.5:
                    requests += 1
                    annotate_rotate(control_plane, namespace, n, f"{requests}")
        proc.kill()
        kills += 1
        down_until = time.monotonic() + rng.uniform(0.0, 4.0)
        while time.monotonic() < down_until:
            for watch in watches:
                assert watch.check() is not None
        proc = start_operator(wait_ready=False)
    proc.kill()
    proc = start_operator()
    for watch in watches:
        wait_for(watch.converged, f"{watch.name} to converge after {kills} kills", timeout=90, interval=0.5)
    distinct = sum(len(w.seen) for w in watches)
    assert distinct >= 3 * len(names)  # the kills hit real rotations, not an idle operator

"""The fault-injection hook: a named point kills the process there and nowhere else; a typo is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from credward.operator import faults

SCRIPT = """
from credward.operator import faults
print(faults.misconfigured(), flush=True)
faults.reached("rotate", "registered")
print("passed rotate:registered", flush=True)
faults.reached("rotate", "secret-written")
print("passed rotate:secret-written", flush=True)
"""


def run_armed(point: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, faults.ENV: point}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def test_unarmed_points_do_nothing() -> None:
    assert faults.misconfigured() is None
    for point in faults.POINTS:
        step, what = point.split(":")
        faults.reached(step, what)
    faults.reached(None, "registered")


def test_an_armed_point_kills_the_process_there_with_sigkill() -> None:
    proc = run_armed("rotate:secret-written")
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.splitlines() == ["None", "passed rotate:registered"]
    assert "fault point rotate:secret-written reached" in proc.stderr


@pytest.mark.parametrize("name", ["rotate:typo", "registered"])
def test_a_name_no_point_has_is_refused(name: str) -> None:
    proc = run_armed(name)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith(f"{faults.ENV}={name!r} names no fault point")


def test_points_are_unique_and_step_qualified() -> None:
    assert len(set(faults.POINTS)) == len(faults.POINTS)
    assert {p.split(":")[0] for p in faults.POINTS} == {"create", "rotate", "retire"}

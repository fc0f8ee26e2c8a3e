"""The lock files pin everything pyproject.toml asks for, and the Dockerfile is built as documented."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from credward.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: str) -> dict[str, Version]:
    """``name -> version`` of a lock file, checking that every pin carries at least one hash."""
    text = (ROOT / lock).read_text()
    found: dict[str, Version] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0] if block.strip() else ""
        match = PIN.match(first)
        if not match:
            continue
        assert "--hash=sha256:" in block, f"{lock}: {first.split()[0]} has no hash"
        found[canonicalize_name(match.group(1))] = Version(match.group(2))
    assert found, f"{lock} pins nothing"
    return found


RUNTIME = pins("requirements.lock")
BUILD = pins("requirements-build.lock")
DEV = pins("requirements-dev.lock")


def requirements(specs: list[str]) -> list[Requirement]:
    return [Requirement(s) for s in specs]


def assert_pinned(lock: dict[str, Version], name: str, wanted: list[Requirement]) -> None:
    for req in wanted:
        # The locks are universal; a requirement limited to other platforms need not be satisfiable here.
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        assert key in lock, f"{name} does not pin {req.name} (pyproject.toml asks for {req}); run `make lock`"
        assert req.specifier.contains(lock[key], prereleases=True), (
            f"{name} pins {req.name}=={lock[key]}, outside {req}; run `make lock`"
        )


def test_the_runtime_lock_covers_the_runtime_dependencies() -> None:
    assert_pinned(RUNTIME, "requirements.lock", requirements(PYPROJECT["project"]["dependencies"]))


def test_the_dev_lock_covers_runtime_dev_and_build() -> None:
    project = PYPROJECT["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["dev"],
        *PYPROJECT["dependency-groups"]["build"],
    ]
    assert_pinned(DEV, "requirements-dev.lock", requirements(wanted))


def test_the_build_lock_covers_the_build_backend_and_installer() -> None:
    wanted = [*PYPROJECT["build-system"]["requires"], *PYPROJECT["dependency-groups"]["build"]]
    assert_pinned(BUILD, "requirements-build.lock", requirements(wanted))


def test_development_runs_what_the_image_ships() -> None:
    """The dev lock is constrained by the other two, so tests run the versions the image installs."""
    for lock in (RUNTIME, BUILD):
        differing = {name: (v, DEV.get(name)) for name, v in lock.items() if DEV.get(name) != v}
        assert differing == {}


def test_the_lock_files_say_how_to_regenerate_them() -> None:
    for lock in ("requirements.lock", "requirements-build.lock", "requirements-dev.lock"):
        assert "#    make lock" in (ROOT / lock).read_text().splitlines()[1]


# --- Dockerfile ---------------------------------------------------------------------------------------


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, split into stages (comments dropped)."""
    parsed = DockerfileParser(path=str(ROOT / "Dockerfile"))
    result: list[list[dict[str, Any]]] = []
    for item in parsed.structure:
        if item["instruction"] == "FROM":
            result.append([])
        if result and item["instruction"] != "COMMENT":
            result[-1].append(item)
    return result


def only(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == instruction]


def test_two_stages_from_the_same_slim_python() -> None:
    build, runtime = stages()
    assert only(build, "FROM") == ["${PYTHON_IMAGE} AS build"]
    assert only(runtime, "FROM") == ["${PYTHON_IMAGE} AS runtime"]
    default = DockerfileParser(path=str(ROOT / "Dockerfile")).structure
    args = [i["value"] for i in default if i["instruction"] == "ARG"]
    assert args == ["PYTHON_IMAGE=python:3.11-slim-bookworm"]
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_dependencies_come_from_the_lock_before_the_source() -> None:
    build, _ = stages()
    order = [(i["instruction"], str(i["value"])) for i in build]
    copy_lock = order.index(("COPY", "requirements.lock ./"))
    install_lock = next(
        n for n, (ins, v) in enumerate(order) if ins == "RUN" and "--require-hashes --no-deps -r requirements.lock" in v
    )
    copy_source = order.index(("COPY", "operator/ operator/"))
    assert copy_lock < install_lock < copy_source
    # credward itself is installed without resolving (the lock decided everything) and checked.
    last_run = only(build, "RUN")[-1]
    assert "install --no-deps /dist/credward-" in last_run
    assert "check" in last_run
    # Nothing installs from an index without hashes.
    for run in only(build, "RUN"):
        for command in run.split("&&"):
            words = shlex.split(command)
            if "install" in words and "-r" in words:
                assert "--require-hashes" in words, command


def test_the_runtime_stage_runs_credward_as_a_numeric_non_root_user_without_build_tools() -> None:
    _, runtime = stages()
    assert only(runtime, "USER") == ["65532:65532"]
    assert [json.loads(v) for v in only(runtime, "ENTRYPOINT")] == [["credward"]]
    assert PYPROJECT["project"]["scripts"]["credward"] == "credward.cli:main"
    (cmd,) = [json.loads(v) for v in only(runtime, "CMD")]
    assert cmd == ["operator", "run"]
    # The only thing copied in is the runtime venv (made --without-pip); the stage itself installs nothing.
    assert only(runtime, "COPY") == ["--from=build /opt/credward /opt/credward"]
    for run in only(runtime, "RUN"):
        assert "install" not in shlex.split(run.replace("&&", " ")), run
    (uninstall,) = only(runtime, "RUN")
    assert "uninstall" in uninstall
    assert {"pip", "setuptools", "wheel"} <= set(shlex.split(uninstall))


@pytest.mark.parametrize("command", [["operator", "run"], ["security", "serve"]])
def test_both_documented_commands_exist_in_the_cli(command: list[str]) -> None:
    documented = (ROOT / "Dockerfile").read_text()
    assert f"credward {' '.join(command)}" in documented
    args = build_parser().parse_args(command)
    assert callable(args.func)

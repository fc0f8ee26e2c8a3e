"""The real Helm (built by ``credward dev build`` from the pinned helm.sh/helm/v3 module) run on the chart."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parent.parent.parent / "charts" / "credward"


@dataclass(frozen=True)
class Helm:
    """``helm`` with its state (cache, config, data) in a private directory, never the user's."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.home),
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def template(self, *args: str, namespace: str = "credward", release: str = "credward") -> list[dict[str, Any]]:
        """The rendered objects (empty documents dropped)."""
        out = self.run("template", release, str(CHART_DIR), "--namespace", namespace, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def set_args(values: dict[str, str]) -> list[str]:
    """``--set-json k=v`` for each entry (values are JSON text, so types are exact)."""
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={value}")]


def find(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def kinds(docs: Sequence[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def deployment(docs: Sequence[dict[str, Any]], component: str) -> dict[str, Any]:
    matches = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(matches) == 1
    return matches[0]


def container(docs: Sequence[dict[str, Any]], component: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment(docs, component)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> the env entry (``value`` or ``valueFrom``)."""
    return {e["name"]: e for e in container.get("env", [])}


def pod_templates(docs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "Deployment":
            yield d["metadata"]["name"], d["spec"]["template"]

"""examples/gitops/ stays in step with crds/ and with itself (the API server's view: tests/integration)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def chart_fields(path: Path) -> dict[str, str]:
    """Chart.yaml's top-level scalar fields (read line by line: only name and appVersion are needed)."""
    fields = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^(name|appVersion):\s*\"?([^\"#]+?)\"?\s*$", line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields


def test_the_crd_copies_are_crds_exactly() -> None:
    """kustomize loads no file from outside its directory, so the example carries copies of crds/."""
    originals = {p.name: p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    copies = {p.name: p.read_text() for p in sorted((GITOPS / "crds").glob("*.yaml")) if p.name != "kustomization.yaml"}
    assert copies == originals, "copy crds/*.yaml to examples/gitops/crds/"
    (kustomization,) = documents(GITOPS / "crds" / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(originals)


def test_every_file_of_the_example_is_in_its_kustomization() -> None:
    (kustomization,) = documents(GITOPS / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in GITOPS.glob("*.yaml") if p.name != "kustomization.yaml"} | {"crds"}
    assert listed == present


def test_flux_and_argo_cd_install_the_same_chart_with_the_same_values() -> None:
    flux = {d["kind"]: d for d in documents(GITOPS / "flux" / "credward.yaml")}
    argo = {d["metadata"]["name"]: d for d in documents(GITOPS / "argocd" / "credward.yaml")}
    chart = chart_fields(ROOT / "charts" / "credward" / "Chart.yaml")

    helm_release = flux["HelmRelease"]["spec"]
    assert (ROOT / helm_release["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    assert Path(helm_release["chart"]["spec"]["chart"]).name == chart["name"]
    assert (ROOT / flux["Kustomization"]["spec"]["path"] / "kustomization.yaml").is_file()

    application = argo["credward"]["spec"]["source"]
    assert application["path"] == helm_release["chart"]["spec"]["chart"]
    assert application["helm"]["valuesObject"] == helm_release["values"]
    assert argo["credward-api"]["spec"]["source"]["path"] == "examples/gitops"
    # Both deploy the same release of the same repository.
    assert application["repoURL"] == flux["GitRepository"]["spec"]["url"]
    assert application["targetRevision"] == flux["GitRepository"]["spec"]["ref"]["tag"] == f"v{chart['appVersion']}"
    # The chart is given values only: no Secret, no manifest of its own.
    for doc in (*flux.values(), *argo.values()):
        assert doc["kind"] in {"GitRepository", "Kustomization", "HelmRelease", "Application"}

"""Fixtures of the chart tests: the real Helm, and a control plane of their own.

The chart installs the CRDs itself (and, with ``crds.keep=false``, removes them), so its tests get a
control plane that no other test shares: the session's plane keeps the CRDs its fixtures applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.helm import Helm

from credward.devcluster import Builder, ControlPlane


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """``credward dev build``'s helm (built here if the cache lacks it)."""
    return Builder().ensure_helm()


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Helm for lint and template (no cluster)."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def chart_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("chart-plane")) as plane:
        yield plane


@pytest.fixture(scope="module")
def cluster_helm(helm_binary: Path, chart_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Helm talking to the chart tests' control plane as its admin."""
    return Helm(helm_binary, tmp_path_factory.mktemp("helm-cluster-home"), chart_plane.kubeconfig)

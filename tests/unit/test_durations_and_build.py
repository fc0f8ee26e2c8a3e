"""Small pure helpers: durations, the Kubernetes wrapper module, operator settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from credward.devcluster.build import (
    HELM_VERSION,
    Builder,
    helm_ldflags,
    kstatus_wrapper_gomod,
    kubernetes_wrapper_gomod,
    staging_modules,
    staging_version,
)
from credward.domain.durations import format_duration, parse_duration
from credward.errors import InvalidDuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(minutes=90)),
        ("720h", timedelta(days=30)),
        ("1.5h", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "h", "5d", "-5m", "1h-30m", "0s", " 5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidDuration, match=r"duration|longer than zero"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert parse_duration(format_duration(timedelta(hours=720))) == timedelta(hours=720)


GOMOD = """module k8s.io/kubernetes

go 1.25.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other => github.com/other v1.0.0
)
"""


def test_staging_modules_read_from_release_gomod() -> None:
    assert staging_modules(GOMOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_wrapper_pins_each_staging_module_to_matching_version() -> None:
    text = kubernetes_wrapper_gomod("v1.35.4", staging_modules(GOMOD), "1.25.0")
    assert "require k8s.io/kubernetes v1.35.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.35.4" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.35.4" in text
    assert "github.com/other" not in text


def test_kstatus_module_uses_the_control_plane_k8s_modules() -> None:
    text = kstatus_wrapper_gomod("v0.37.2", "v1.35.4")
    assert "\tsigs.k8s.io/cli-utils v0.37.2\n" in text
    assert "\tk8s.io/apimachinery v0.35.4\n" in text
    assert "\tk8s.io/api v0.35.4\n" in text


def test_staging_version_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes release"):
        staging_version("1.35")


def test_helm_ldflags_set_its_version_and_the_kubernetes_version_of_its_client_go() -> None:
    flags = helm_ldflags("v3.22.0", "v0.37.0")
    assert "-X helm.sh/helm/v3/internal/version.version=v3.22.0" in flags
    # `helm template` and lint assume this Kubernetes version (else 1.20, below the chart's kubeVersion).
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in flags
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" in flags
    with pytest.raises(ValueError, match="client-go"):
        helm_ldflags("v3.22.0", "v1.37.0")


def test_helm_lands_in_a_versioned_cache_directory(tmp_path: Path) -> None:
    builder = Builder(tmp_path)
    assert builder.helm == tmp_path / "bin" / f"helm-{HELM_VERSION}" / "helm"
    assert not builder.helm_is_built()

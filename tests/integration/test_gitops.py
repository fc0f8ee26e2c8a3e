"""examples/gitops/ renders with the real kubectl kustomize and the real API server accepts every object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.kube import get

from credward.devcluster import ControlPlane

pytestmark = pytest.mark.integration

GITOPS = Path(__file__).resolve().parents[2] / "examples" / "gitops"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition"}


def test_the_kustomization_renders_and_is_accepted(
    control_plane: ControlPlane, crds: list[str], namespace: str
) -> None:
    rendered = control_plane.kubectl("kustomize", str(GITOPS)).stdout
    objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Namespace",
        "RoleBinding",
        "ServiceAccountCredential",
    ]
    assert sorted(o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition") == sorted(crds)

    # The CRDs and the namespace are the cluster's own (shared by every test): the server checks them, stores nothing.
    items = [o for o in objects if o["kind"] in CLUSTER_SCOPED]
    cluster: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": items}
    out = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(cluster)
    ).stdout
    assert sorted(i["kind"] for i in json.loads(out)["items"]) == sorted(i["kind"] for i in cluster["items"])

    # The team's objects are really applied, into this test's namespace instead of "ci".
    team = [o for o in objects if o["kind"] not in CLUSTER_SCOPED]
    assert {o["metadata"]["namespace"] for o in team} == {"ci"}
    for o in team:
        o["metadata"]["namespace"] = namespace
    control_plane.kubectl(
        "apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": team})
    )
    stored = get(control_plane, "serviceaccountcredential", "ci-pipeline", namespace)
    assert stored is not None
    assert stored["spec"]["displayName"] == "CI pipeline (main branch)"
    binding = get(control_plane, "rolebindings.credward.io", "ci-pipeline-store", namespace)
    assert binding is not None
    assert binding["spec"]["serviceAccount"] == "ci-pipeline"

"""Manifests and kubectl calls shared by the webhook's integration tests."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from credward.devcluster import ControlPlane

INJECT = {"credward.io/inject": "true"}


def credential(
    plane: ControlPlane, namespace: str, name: str, status: dict[str, Any] | None = None, **spec: Any
) -> None:
    """A ServiceAccountCredential; ``status`` is written through the status subresource (no operator needed)."""
    manifest = {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "ServiceAccountCredential",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"displayName": f"{name} for webhook tests", **spec},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    if status:
        plane.kubectl(
            "patch",
            "sac",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


def pod(
    name: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec},
    }


def create(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl create -o json``: stdout is the stored object, stderr carries refusals and warnings."""
    return plane.kubectl("create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(manifest), check=False)


def stored(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    proc = create(plane, namespace, manifest)
    assert proc.returncode == 0, proc.stderr
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def refused(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> str:
    """The message the API server returned to kubectl, which must have refused ``manifest``."""
    proc = create(plane, namespace, manifest)
    assert proc.returncode != 0, f"admitted: {proc.stdout[:400]}"
    return proc.stderr


def without_service_account_volume(spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec minus the API server's own token volume (its name is random)."""
    out: dict[str, Any] = json.loads(json.dumps(spec))
    out["volumes"] = [v for v in out.get("volumes", []) if not v["name"].startswith("kube-api-access-")]
    for kind in ("containers", "initContainers"):
        for c in out.get(kind, []):
            c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if not m["name"].startswith("kube-api-access-")]
            if not c["volumeMounts"]:
                del c["volumeMounts"]
    if not out["volumes"]:
        del out["volumes"]
    return out

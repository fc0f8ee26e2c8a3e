"""Workloads as a cluster runs them: the Deployment and ReplicaSet controllers create the Pods admission sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import EXAMPLES_DIR
from tests.integration.webhook.conftest import SECURITY_BASE_URL, WebhookProcess
from tests.support.kube import get, wait_for

from credward.devcluster import ControlPlane


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_kubectl_apply_of_the_examples_yields_injected_pods(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR), "-f", str(Path(EXAMPLES_DIR, "pods")))
    (created,) = wait_for(lambda: pods(control_plane, namespace, "app=builder"), "the Deployment's pod")
    spec = created["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "credward-ci-pipeline")
    assert volume["secret"]["secretName"] == "ci-pipeline-credentials"
    builder = spec["containers"][0]
    assert {
        "name": "credward-ci-pipeline",
        "mountPath": "/var/run/secrets/credward.io/ci-pipeline",
        "readOnly": True,
    } in builder["volumeMounts"]
    env = {e["name"]: e for e in builder["env"]}
    assert env["CLIENT_SECRET_PATH"]["value"] == "/var/run/secrets/credward.io/ci-pipeline/client-secret"
    assert env["SECURITY_BASE_URL"]["value"] == SECURITY_BASE_URL
    assert env["CLIENT_ID"]["valueFrom"]["secretKeyRef"] == {"name": "ci-pipeline-credentials", "key": "client-id"}


def test_an_automatic_account_reaches_the_pods_its_replicaset_retries(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {
                    "labels": {"app": "shop", "credward.io/inject": "true"},
                    "annotations": {"credward.io/credential": "auto"},
                },
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))

    # The ReplicaSet may try before the credential exists (refused: "does not exist yet"); it retries.
    def both() -> list[dict[str, Any]] | None:
        found = pods(control_plane, namespace, "app=shop")
        return found if len(found) == 2 else None

    created = wait_for(both, "two pods of the Deployment", timeout=60)
    for item in created:
        names = {v["name"] for v in item["spec"]["volumes"]}
        assert "credward-deployment-shop" in names
    credential = get(control_plane, "sac", "deployment-shop", namespace)
    assert credential is not None
    assert credential["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

"""Automatic accounts: a workload asking for ``credward.io/credential: auto`` gets a credential it owns.

(That its ReplicaSet's pods get it is tests/integration/webhook/test_webhook_workloads.py.)
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.webhook.conftest import WebhookProcess
from tests.integration.webhook.helpers import INJECT, pod, refused, stored
from tests.support.kube import get, wait_for

from credward.devcluster import ControlPlane

AUTO = {"credward.io/credential": "auto"}


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **INJECT}, "annotations": AUTO},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }


def test_a_deployment_gets_an_owned_credential_and_its_pods_are_injected(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    created = stored(control_plane, namespace, deployment("web"))
    credential = wait_for(
        lambda: get(control_plane, "sac", "deployment-web", namespace), "the automatic credential deployment-web"
    )
    (owner,) = credential["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", "web", created["metadata"]["uid"])
    assert credential["spec"]["displayName"] == f"Deployment {namespace}/web (automatic)"

    # Its pods (made by the Deployment and ReplicaSet controllers) carry that credential.
    (made,) = wait_for(
        lambda: json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout)[
            "items"
        ],
        "the Deployment's pod",
    )
    volume = next(v for v in made["spec"]["volumes"] if v["name"] == "credward-deployment-web")
    assert volume["secret"]["secretName"] == "deployment-web-credentials"
    env = {e["name"]: e for e in made["spec"]["containers"][0]["env"]}
    assert env["CLIENT_SECRET_PATH"]["value"] == "/var/run/secrets/credward.io/deployment-web/client-secret"

    # Deleted with its workload (the garbage collector follows the owner reference).
    control_plane.kubectl("delete", "deployment", "web", "-n", namespace)
    wait_for(
        lambda: get(control_plane, "sac", "deployment-web", namespace) is None,
        "the automatic credential to be garbage-collected",
        timeout=60,
    )


def test_spec_comes_from_the_namespace_default_when_the_workload_has_none(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    control_plane.kubectl(
        "annotate",
        "namespace",
        namespace,
        'credward.io/credential-spec={"displayName": "batch jobs", "tokenTTL": "2m"}',
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate"},
        "spec": {
            "template": {
                "metadata": {"labels": INJECT, "annotations": AUTO},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox"}]},
            }
        },
    }
    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(job))
    credential = wait_for(lambda: get(control_plane, "sac", "job-migrate", namespace), "the credential job-migrate")
    assert credential["spec"]["displayName"] == "batch jobs"
    assert credential["spec"]["tokenTTL"] == "2m"


def test_auto_outside_a_workload_and_before_the_credential_exists_are_refused(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    message = refused(control_plane, namespace, pod("lonely", labels=INJECT, annotations=AUTO))
    assert "only pods of a Deployment, StatefulSet or Job get" in message
    orphan = pod("ghost-1", labels=INJECT, annotations=AUTO)
    orphan["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ghost", "uid": "0000", "controller": True}
    ]
    message = refused(control_plane, namespace, orphan)
    assert 'credential "statefulset-ghost", made automatically for StatefulSet ghost, does not exist yet' in message

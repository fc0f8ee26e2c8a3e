"""Automatic accounts: a workload asking for ``credward.io/credential: auto`` gets a credential it owns.

The local control plane runs no Deployment or ReplicaSet controller, so the pod a
ReplicaSet would create is created here, exactly as that controller would write it
(owner reference, pod-template-hash label).
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

    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-6b7d9c",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": created["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "6b7d9c"}},
            "template": {
                "metadata": {"labels": {"app": "web", "pod-template-hash": "6b7d9c", **INJECT}, "annotations": AUTO},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }
    rs = stored(control_plane, namespace, replica_set)
    manifest = pod("web-6b7d9c-x2k4q", labels={"app": "web", "pod-template-hash": "6b7d9c", **INJECT}, annotations=AUTO)
    manifest["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web-6b7d9c",
            "uid": rs["metadata"]["uid"],
            "controller": True,
        }
    ]
    obj = stored(control_plane, namespace, manifest)
    volume = next(v for v in obj["spec"]["volumes"] if v["name"] == "credward-deployment-web")
    assert volume["secret"]["secretName"] == "deployment-web-credentials"
    env = {e["name"]: e for e in obj["spec"]["containers"][0]["env"]}
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

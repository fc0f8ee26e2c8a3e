"""Consumption that never sees a rotation, refused (or warned about) at kubectl apply of a Pod or a workload."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.integration.webhook.conftest import WebhookProcess
from tests.integration.webhook.helpers import INJECT, create, credential, pod, refused

from credward.devcluster import ControlPlane

DENIED_PODS = 'admission webhook "deny.pods.consumption.credward.io" denied the request: '
DENIED_WORKLOADS = 'admission webhook "deny.workloads.consumption.credward.io" denied the request: '
SECRET_REF = {"valueFrom": {"secretKeyRef": {"name": "app-credentials", "key": "client-secret"}}}


def pod_spec(**container: Any) -> dict[str, Any]:
    return {
        "containers": [{"name": "app", "image": "busybox", **container}],
        "volumes": [{"name": "creds", "secret": {"secretName": "app-credentials"}}],
    }


def workload(
    kind: str,
    name: str,
    spec: dict[str, Any],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name, **(labels or {})}, "annotations": annotations or {}}, "spec": spec}
    if kind == "CronJob":
        template["spec"] = {**spec, "restartPolicy": "Never"}
        body: dict[str, Any] = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name}, "spec": body}
    if kind == "Job":
        template["spec"] = {**spec, "restartPolicy": "Never"}
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name}, "spec": {"template": template}}
    body = {"selector": {"matchLabels": {"app": name}}, "template": template}
    if kind == "StatefulSet":
        body["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": body}


def test_pod_mounting_a_credward_secret_with_subpath_is_refused_with_the_fix(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "app")
    mount = {"name": "creds", "mountPath": "/etc/secret", "subPath": "client-secret"}
    message = refused(control_plane, namespace, {**pod("sub"), "spec": pod_spec(volumeMounts=[mount])})
    assert DENIED_PODS in message
    assert 'Pod sub, container "app" mounts Secret app-credentials (credential "app") with subPath' in message
    assert "drop subPath" in message
    assert f"kubectl label namespace {namespace} credward.io/secret-consumption=warn" in message
    # The same mount as a directory is fine.
    ok = create(
        control_plane,
        namespace,
        {**pod("dir"), "spec": pod_spec(volumeMounts=[{"name": "creds", "mountPath": "/etc/secret"}])},
    )
    assert ok.returncode == 0, ok.stderr
    assert "Warning" not in ok.stderr


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"])
def test_workload_reading_the_client_secret_into_env_is_refused_at_apply(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str, kind: str
) -> None:
    credential(control_plane, namespace, "app")
    spec = pod_spec(env=[{"name": "CLIENT_SECRET", **SECRET_REF}])
    message = refused(control_plane, namespace, workload(kind, "w", spec))
    assert DENIED_WORKLOADS in message
    assert f'{kind} w (pod template), container "app" reads client-secret of Secret app-credentials' in message
    assert "Read the file at $CLIENT_SECRET_PATH instead" in message


def test_env_from_a_credward_secret_and_an_update_that_adds_it_are_refused(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "app")
    good = workload("Deployment", "upd", pod_spec())
    assert create(control_plane, namespace, good).returncode == 0
    bad = workload("Deployment", "upd", pod_spec(envFrom=[{"secretRef": {"name": "app-credentials"}}]))
    proc = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert DENIED_WORKLOADS in proc.stderr
    assert "loads all of Secret app-credentials" in proc.stderr
    assert "through envFrom" in proc.stderr


def test_other_secrets_and_other_keys_are_left_alone(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "app")
    spec = {
        "containers": [
            {
                "name": "app",
                "image": "busybox",
                "env": [
                    {"name": "ID", "valueFrom": {"secretKeyRef": {"name": "app-credentials", "key": "client-id"}}},
                    {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "unrelated", "key": "client-secret"}}},
                ],
                "volumeMounts": [{"name": "u", "mountPath": "/u/file", "subPath": "file"}],
            }
        ],
        "volumes": [{"name": "u", "secret": {"secretName": "unrelated"}}],
    }
    proc = create(control_plane, namespace, {**pod("fine"), "spec": spec})
    assert proc.returncode == 0, proc.stderr


def test_a_namespace_label_downgrades_refusals_to_warnings(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "app")
    control_plane.kubectl("label", "namespace", namespace, "credward.io/secret-consumption=warn")
    spec = pod_spec(env=[{"name": "CLIENT_SECRET", **SECRET_REF}])
    proc = None
    for _ in range(20):  # the label reaches the API server's namespace cache within moments
        proc = create(control_plane, namespace, workload("Deployment", "warned", spec))
        if proc.returncode == 0:
            break
    assert proc is not None
    assert proc.returncode == 0, proc.stderr
    assert 'Warning: credward: Deployment warned (pod template), container "app" reads client-secret' in proc.stderr
    proc = create(control_plane, namespace, {**pod("warned-pod"), "spec": spec})
    assert proc.returncode == 0
    assert "Warning: credward: Pod warned-pod" in proc.stderr


def test_a_template_naming_a_missing_credential_warns_at_apply(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    manifest = workload(
        "Deployment",
        "early",
        {"containers": [{"name": "app", "image": "busybox"}]},
        labels=INJECT,
        annotations={"credward.io/credential": "later"},
    )
    proc = create(control_plane, namespace, manifest)
    assert proc.returncode == 0, proc.stderr
    assert 'Warning: credward: Deployment early (pod template) asks for credential "later"' in proc.stderr
    assert "its pods are refused until the ServiceAccountCredential exists" in proc.stderr


def test_an_opted_in_pod_is_checked_by_the_injecting_call(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "app")
    mount = {"name": "creds", "mountPath": "/etc/secret", "subPath": "client-secret"}
    manifest = {
        **pod("both", labels=INJECT, annotations={"credward.io/credential": "app"}),
        "spec": pod_spec(volumeMounts=[mount]),
    }
    message = refused(control_plane, namespace, manifest)
    assert 'admission webhook "inject.pods.credward.io" denied the request: ' in message
    assert 'Pod both, container "app" mounts Secret app-credentials (credential "app") with subPath' in message
    control_plane.kubectl("label", "namespace", namespace, "credward.io/secret-consumption=warn")
    for _ in range(20):
        proc = create(control_plane, namespace, manifest)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr
    assert "credward-app" in proc.stdout  # injected...
    assert "Warning: credward: Pod both" in proc.stderr  # ...and warned

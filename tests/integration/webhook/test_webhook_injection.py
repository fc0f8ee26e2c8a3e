"""Opted-in Pods as the API server stores them after calling the real webhook over TLS; every refusal's message."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from tests.integration.webhook.conftest import SECURITY_BASE_URL, WebhookProcess
from tests.integration.webhook.helpers import (
    INJECT,
    create,
    credential,
    pod,
    refused,
    stored,
    without_service_account_volume,
)

from credward.devcluster import ControlPlane

DENIED = 'admission webhook "inject.pods.credward.io" denied the request: '


def injected_env(name: str, secret: str, path: str | None = None) -> list[dict[str, Any]]:
    path = path or f"/var/run/secrets/credward.io/{name}"
    return [
        {"name": "CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": "client-id"}}},
        {"name": "CLIENT_SECRET_PATH", "value": f"{path}/client-secret"},
        {"name": "SECURITY_BASE_URL", "value": SECURITY_BASE_URL},
    ]


def test_opted_in_pod_gets_volume_mount_and_variables_and_nothing_else(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "builder")
    user = {"env": [{"name": "LOG_LEVEL", "value": "debug"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    spec = {"containers": [{"name": "app", "image": "busybox", **user}], "volumes": [{"name": "data", "emptyDir": {}}]}
    plain = stored(control_plane, namespace, {**pod("plain"), "spec": spec})
    ann = {"credward.io/credential": "builder"}
    obj = stored(control_plane, namespace, {**pod("web", labels=INJECT, annotations=ann), "spec": spec})

    got = without_service_account_volume(obj["spec"])
    volume = next(v for v in got["volumes"] if v["name"] == "credward-builder")
    assert volume["secret"]["secretName"] == "builder-credentials"
    app = got["containers"][0]
    assert app["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "credward-builder", "mountPath": "/var/run/secrets/credward.io/builder", "readOnly": True},
    ]
    assert app["env"] == [*injected_env("builder", "builder-credentials"), {"name": "LOG_LEVEL", "value": "debug"}]
    # Everything else is what the API server stores for the same pod without credward.
    expected = without_service_account_volume(plain["spec"])
    expected["volumes"].append(volume)
    expected["containers"][0]["env"] = app["env"]
    expected["containers"][0]["volumeMounts"] = app["volumeMounts"]
    assert got == expected
    assert obj["metadata"]["annotations"] == ann  # no bookkeeping annotations


def test_a_second_pass_over_the_stored_pod_changes_nothing(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "twice")
    first = stored(
        control_plane, namespace, pod("first", labels=INJECT, annotations={"credward.io/credential": "twice"})
    )
    again = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "again", **{k: first["metadata"][k] for k in ("labels", "annotations")}},
        "spec": without_service_account_volume(first["spec"]),
    }
    second = stored(control_plane, namespace, again)  # the webhook sees an already injected pod
    assert without_service_account_volume(second["spec"]) == without_service_account_volume(first["spec"])


def test_pods_without_the_label_are_never_sent_to_the_mutating_webhook(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    # No credential of that name exists: an opted-in pod would be refused.
    obj = stored(control_plane, namespace, pod("unlabelled", annotations={"credward.io/credential": "nowhere"}))
    assert "env" not in obj["spec"]["containers"][0]


def test_chosen_containers_init_containers_and_mount_directory(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "picky", secretName="picky-secret")
    manifest = pod(
        "picky",
        labels=INJECT,
        annotations={
            "credward.io/credential": "picky",
            "credward.io/containers": "app",
            "credward.io/init-containers": "migrate",
            "credward.io/mount-path": "/etc/identity",
        },
        containers=[{"name": "app", "image": "busybox"}, {"name": "proxy", "image": "envoy"}],
        initContainers=[{"name": "fetch", "image": "busybox"}, {"name": "migrate", "image": "busybox"}],
    )
    spec = without_service_account_volume(stored(control_plane, namespace, manifest)["spec"])
    assert spec["containers"][0]["env"] == injected_env("picky", "picky-secret", "/etc/identity")
    assert spec["initContainers"][1]["env"] == injected_env("picky", "picky-secret", "/etc/identity")
    assert spec["initContainers"][1]["volumeMounts"][0]["mountPath"] == "/etc/identity"
    assert "env" not in spec["containers"][1]
    assert "env" not in spec["initContainers"][0]


def test_a_name_clash_is_refused_naming_it(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    credential(control_plane, namespace, "clash")
    ann = {"credward.io/credential": "clash"}
    message = refused(
        control_plane,
        namespace,
        pod(
            "env",
            labels=INJECT,
            annotations=ann,
            containers=[{"name": "app", "image": "x", "env": [{"name": "CLIENT_ID", "value": "mine"}]}],
        ),
    )
    assert DENIED in message
    assert 'Pod env, container "app" already sets CLIENT_ID' in message
    message = refused(
        control_plane,
        namespace,
        pod("vol", labels=INJECT, annotations=ann, volumes=[{"name": "credward-clash", "emptyDir": {}}]),
    )
    assert 'Pod vol already has a volume named "credward-clash"' in message
    assert "rename your volume" in message


def test_missing_revoked_and_expired_credentials_are_refused_with_what_to_do(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    message = refused(
        control_plane, namespace, pod("p1", labels=INJECT, annotations={"credward.io/credential": "ghost"})
    )
    assert DENIED in message
    assert f'namespace "{namespace}" has no ServiceAccountCredential "ghost": create it first' in message

    credential(control_plane, namespace, "revoked", revoked=True)
    message = refused(
        control_plane, namespace, pod("p2", labels=INJECT, annotations={"credward.io/credential": "revoked"})
    )
    assert 'credential "revoked"' in message
    assert "which is revoked (spec.revoked)" in message

    credential(control_plane, namespace, "old", lifetime="1s", status={"expiresAt": "2020-01-01T00:00:00Z"})
    # An operator running beside this test (the session's) may rewrite expiresAt to creation + 1s: wait past it.
    time.sleep(2)
    message = refused(control_plane, namespace, pod("p3", labels=INJECT, annotations={"credward.io/credential": "old"}))
    assert 'credential "old"' in message
    assert "expired at 20" in message

    message = refused(control_plane, namespace, pod("p4", labels=INJECT))
    assert "has no credward.io/credential annotation" in message


def test_a_credential_created_just_before_its_pod_is_found(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    manifests = [
        {
            "apiVersion": "credward.io/v1alpha1",
            "kind": "ServiceAccountCredential",
            "metadata": {"name": "fresh"},
            "spec": {"displayName": "fresh"},
        },
        pod("fresh", labels=INJECT, annotations={"credward.io/credential": "fresh"}),
    ]
    proc = control_plane.kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        "-o",
        "json",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    assert "credward-fresh" in proc.stdout


def test_the_webhooks_own_namespace_is_never_admitted(control_plane: ControlPlane, webhook: WebhookProcess) -> None:
    obj = stored(
        control_plane, webhook.namespace, pod("self", labels=INJECT, annotations={"credward.io/credential": "none"})
    )
    assert "env" not in obj["spec"]["containers"][0]
    control_plane.kubectl("delete", "pod", "self", "-n", webhook.namespace, "--wait=false")


def test_configuration_fails_closed_only_for_opted_in_pods(
    control_plane: ControlPlane, webhook: WebhookProcess
) -> None:
    mutating = json.loads(
        control_plane.kubectl("get", "mutatingwebhookconfiguration", webhook.configuration, "-o", "json").stdout
    )
    validating = json.loads(
        control_plane.kubectl("get", "validatingwebhookconfiguration", webhook.configuration, "-o", "json").stdout
    )
    assert [h["name"] for h in mutating["webhooks"]] == ["inject.pods.credward.io", "inject-warn.pods.credward.io"]
    for inject, path, mode in zip(mutating["webhooks"], ("/mutate", "/mutate/warn"), ("NotIn", "In"), strict=True):
        assert inject["failurePolicy"] == "Fail"
        assert inject["objectSelector"] == {"matchLabels": INJECT}
        assert inject["reinvocationPolicy"] == "IfNeeded"
        assert inject["sideEffects"] == "None"
        assert inject["timeoutSeconds"] == 5
        assert inject["clientConfig"]["url"] == f"{webhook.url}{path}"
        excluded, label = inject["namespaceSelector"]["matchExpressions"]
        assert excluded["operator"] == "NotIn"
        assert set(excluded["values"]) == {webhook.namespace, "kube-system"}
        assert (label["key"], label["operator"], label["values"]) == ("credward.io/secret-consumption", mode, ["warn"])
    assert {h["failurePolicy"] for h in validating["webhooks"]} == {"Ignore"}
    assert (
        create(
            control_plane, "kube-system", pod("sys", labels=INJECT, annotations={"credward.io/credential": "x"})
        ).returncode
        == 0
    )
    control_plane.kubectl("delete", "pod", "sys", "-n", "kube-system", "--wait=false")


def test_the_example_deployment_is_admitted_and_its_pods_get_the_example_credential(
    control_plane: ControlPlane, webhook: WebhookProcess, namespace: str
) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    control_plane.kubectl("apply", "-n", namespace, "-f", str(examples), "-f", str(examples / "pods"))
    deployment = yaml.safe_load((examples / "pods" / "deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    # A pod of its template, beside the same pod without credward's label and annotation.
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "builder-1", **template["metadata"]},
        "spec": template["spec"],
    }
    plain = {**manifest, "metadata": {"name": "builder-plain"}}
    got = without_service_account_volume(stored(control_plane, namespace, manifest)["spec"])
    expected = without_service_account_volume(stored(control_plane, namespace, plain)["spec"])
    expected["volumes"] = [
        {"name": "credward-ci-pipeline", "secret": {"secretName": "ci-pipeline-credentials", "defaultMode": 420}}
    ]
    expected["containers"][0]["volumeMounts"] = [
        {"name": "credward-ci-pipeline", "mountPath": "/var/run/secrets/credward.io/ci-pipeline", "readOnly": True}
    ]
    expected["containers"][0]["env"] = injected_env("ci-pipeline", "ci-pipeline-credentials")
    assert got == expected

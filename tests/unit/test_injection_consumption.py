"""consumption_findings(): reads of a credward Secret that never see a rotation, in Pods and templates."""

from __future__ import annotations

from typing import Any

import pytest

from credward.domain.injection import consumption_findings, consumption_verdict, pod_spec_of, template_of

MANAGED = {"builder-credentials": "builder"}
WHAT = "Pod web"


def spec(**container: Any) -> dict[str, Any]:
    return {
        "volumes": [{"name": "creds", "secret": {"secretName": "builder-credentials"}}],
        "containers": [{"name": "app", "image": "x", **container}],
    }


def test_directory_mount_and_client_id_ref_are_fine() -> None:
    ok = spec(
        volumeMounts=[{"name": "creds", "mountPath": "/creds", "readOnly": True}],
        env=[{"name": "ID", "valueFrom": {"secretKeyRef": {"name": "builder-credentials", "key": "client-id"}}}],
    )
    assert consumption_findings(ok, MANAGED, WHAT) == []


@pytest.mark.parametrize("field", ["subPath", "subPathExpr"])
def test_subpath_mount_is_found_with_the_fix(field: str) -> None:
    findings = consumption_findings(
        spec(volumeMounts=[{"name": "creds", "mountPath": "/s", field: "client-secret"}]), MANAGED, WHAT
    )
    assert len(findings) == 1
    message = findings[0].message
    assert 'container "app"' in message
    assert "builder-credentials" in message
    assert "subPath" in message
    assert "drop subPath" in message
    assert "credward.io/inject=true" in message


def test_projected_secret_source_counts() -> None:
    projected = {
        "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": "builder-credentials"}}]}}],
        "containers": [{"name": "app", "volumeMounts": [{"name": "p", "mountPath": "/s", "subPath": "client-secret"}]}],
    }
    assert len(consumption_findings(projected, MANAGED, WHAT)) == 1


def test_secret_key_ref_to_the_client_secret_and_env_from_are_found() -> None:
    found = consumption_findings(
        spec(
            env=[
                {
                    "name": "SECRET",
                    "valueFrom": {"secretKeyRef": {"name": "builder-credentials", "key": "client-secret"}},
                }
            ],
            envFrom=[{"secretRef": {"name": "builder-credentials"}}],
        ),
        MANAGED,
        WHAT,
    )
    assert len(found) == 2
    assert "secretKeyRef" in found[0].message
    assert "env SECRET" in found[0].message
    assert "envFrom" in found[1].message


def test_init_containers_are_checked_and_other_secrets_are_not() -> None:
    pod_spec = {
        "volumes": [{"name": "other", "secret": {"secretName": "unrelated"}}],
        "initContainers": [
            {
                "name": "init",
                "env": [
                    {
                        "name": "S",
                        "valueFrom": {"secretKeyRef": {"name": "builder-credentials", "key": "client-secret"}},
                    }
                ],
            }
        ],
        "containers": [{"name": "app", "volumeMounts": [{"name": "other", "mountPath": "/o", "subPath": "k"}]}],
    }
    found = consumption_findings(pod_spec, MANAGED, WHAT)
    assert [f.message.split(",")[1].strip().split()[1] for f in found] == ['"init"']


def test_verdict_refuses_or_warns() -> None:
    found = consumption_findings(spec(envFrom=[{"secretRef": {"name": "builder-credentials"}}]), MANAGED, WHAT)
    denied = consumption_verdict(found, "ci", warn_only=False)
    assert not denied.allowed
    assert "kubectl label namespace ci credward.io/secret-consumption=warn" in denied.message
    warned = consumption_verdict(found, "ci", warn_only=True)
    assert warned.allowed
    assert warned.warnings == (f"credward: {found[0].message}",)
    assert consumption_verdict([], "ci", warn_only=False).allowed


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_templates_are_found(kind: str) -> None:
    obj = {"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}
    assert pod_spec_of(kind, obj) == {"containers": []}
    assert template_of(kind, obj) == obj["spec"]["template"]


def test_cron_job_template_and_pod_spec() -> None:
    cron = {"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}}}
    assert pod_spec_of("CronJob", cron) == {"containers": [{"name": "c"}]}
    assert pod_spec_of("Pod", {"spec": {"containers": []}}) == {"containers": []}
    assert template_of("Pod", {"spec": {}}) is None

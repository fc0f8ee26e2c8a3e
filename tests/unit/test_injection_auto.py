"""Automatic accounts: which workload a Pod belongs to, the credential's name, spec and owner."""

from __future__ import annotations

from typing import Any

import pytest

from credward.domain.injection import (
    ANNOTATION_CREDENTIAL_SPEC,
    Verdict,
    auto_credential,
    auto_credential_name,
    wants_auto_credential,
    workload_of_pod,
)


def owned_pod(kind: str, name: str, template_hash: str | None = None) -> dict[str, Any]:
    labels = {"pod-template-hash": template_hash} if template_hash else {}
    return {
        "metadata": {
            "labels": labels,
            "ownerReferences": [{"kind": kind, "name": name, "controller": True, "uid": "u"}],
        }
    }


def deployment(annotations: dict[str, str] | None = None, template_annotation: str = "auto") -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-1", "annotations": annotations or {}},
        "spec": {"template": {"metadata": {"annotations": {"credward.io/credential": template_annotation}}}},
    }


def test_pods_map_to_their_workload() -> None:
    assert workload_of_pod(owned_pod("ReplicaSet", "web-5d8f7c9b4", "5d8f7c9b4")) == ("Deployment", "web")
    assert workload_of_pod(owned_pod("StatefulSet", "db")) == ("StatefulSet", "db")
    assert workload_of_pod(owned_pod("Job", "migrate-1")) == ("Job", "migrate-1")
    assert workload_of_pod(owned_pod("ReplicaSet", "bare")) is None  # a ReplicaSet of its own
    assert workload_of_pod(owned_pod("DaemonSet", "agent")) is None
    assert workload_of_pod({"metadata": {}}) is None


def test_names_are_predictable_and_valid() -> None:
    assert auto_credential_name("Deployment", "web") == "deployment-web"
    assert auto_credential_name("Job", "migrate") == "job-migrate"
    long = auto_credential_name("StatefulSet", "x" * 253)
    assert len(long) <= 241
    assert long != auto_credential_name("StatefulSet", "x" * 252)


def test_credential_is_owned_by_the_workload_with_a_default_spec() -> None:
    assert wants_auto_credential("Deployment", deployment())
    assert not wants_auto_credential("Deployment", deployment(template_annotation="builder"))
    manifest = auto_credential("Deployment", deployment(), None)
    assert isinstance(manifest, dict)
    assert manifest["metadata"]["name"] == "deployment-web"
    assert manifest["metadata"]["namespace"] == "shop"
    assert manifest["metadata"]["ownerReferences"] == [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-1"}
    ]
    assert manifest["spec"] == {"displayName": "Deployment shop/web (automatic)"}


def test_spec_from_the_workload_wins_over_the_namespace_default() -> None:
    own = deployment({ANNOTATION_CREDENTIAL_SPEC: '{"tokenTTL": "2m", "groups": ["/shop"]}'})
    manifest = auto_credential("Deployment", own, '{"tokenTTL": "10m"}')
    assert isinstance(manifest, dict)
    assert manifest["spec"]["tokenTTL"] == "2m"
    from_namespace = auto_credential("Deployment", deployment(), '{"tokenTTL": "10m", "displayName": "shop"}')
    assert isinstance(from_namespace, dict)
    assert from_namespace["spec"] == {"tokenTTL": "10m", "displayName": "shop"}


@pytest.mark.parametrize("text", ["{not json", '["a list"]'])
def test_a_malformed_spec_annotation_is_named(text: str) -> None:
    verdict = auto_credential("Deployment", deployment({ANNOTATION_CREDENTIAL_SPEC: text}), None)
    assert isinstance(verdict, Verdict)
    assert "Deployment web" in verdict.message
    assert ANNOTATION_CREDENTIAL_SPEC in verdict.message

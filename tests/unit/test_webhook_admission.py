"""Admission and the AdmissionReview shape, with credentials from memory (its I/O is in the integration tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from credward.domain.injection import CredentialView, InjectionSettings, Verdict
from credward.errors import TransientError
from credward.webhook.app import Admission, review_response

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


class Credentials:
    def __init__(self, *views: CredentialView) -> None:
        self.views = {(v.namespace, v.name): v for v in views}

    async def get(self, namespace: str, name: str) -> CredentialView | None:
        return self.views.get((namespace, name))

    def managed_secrets(self, namespace: str) -> Mapping[str, str]:
        return {v.secret_name: v.name for (ns, _), v in self.views.items() if ns == namespace}


ADMISSION = Admission(
    Credentials(CredentialView("ci", "app", "app-credentials")),
    InjectionSettings(security_base_url="http://sec:9000"),
    clock=lambda: NOW,
)


def request(obj: dict[str, Any], kind: str = "Pod") -> dict[str, Any]:
    return {"uid": "u-1", "kind": {"kind": kind}, "namespace": "ci", "object": obj}


def pod(annotations: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "generateName": "web-",
            "labels": {"credward.io/inject": "true"} if labels is None else labels,
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "app"}]},
    }


async def test_mutation_answers_a_jsonpatch_the_api_server_can_apply() -> None:
    obj = pod({"credward.io/credential": "app"})
    verdict = await ADMISSION.mutate(request(obj))
    response = review_response("u-1", verdict)["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == ("u-1", True, "JSONPatch")
    patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    assert patched["spec"]["volumes"][0]["secret"]["secretName"] == "app-credentials"


async def test_refusals_carry_a_403_status_with_the_message() -> None:
    verdict = await ADMISSION.mutate(request(pod({"credward.io/credential": "nope"})))
    response = review_response("u-1", verdict)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert 'Pod web-* asks for credential "nope"' in response["status"]["message"]
    assert "patch" not in response


async def test_pods_that_did_not_opt_in_pass_untouched() -> None:
    verdict = await ADMISSION.mutate(request(pod({"credward.io/credential": "nope"}, labels={})))
    assert verdict == Verdict.allow()


def test_validation_warns_with_a_namespace_label_and_names_the_workload() -> None:
    deployment = {
        "metadata": {"name": "w"},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {"containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "app-credentials"}}]}]},
            }
        },
    }
    denied = ADMISSION.validate(request(deployment, "Deployment"), warn_only=False)
    assert not denied.allowed
    assert denied.message.startswith('Deployment w (pod template), container "app" loads all of Secret app-credentials')
    warned = review_response("u-1", ADMISSION.validate(request(deployment, "Deployment"), warn_only=True))["response"]
    assert warned["allowed"] is True
    assert warned["warnings"][0].startswith("credward: Deployment w (pod template)")


class Unreachable(Credentials):
    async def get(self, namespace: str, name: str) -> CredentialView | None:
        raise TransientError("reading ServiceAccountCredential ci/app: HTTP 503")


async def test_a_lookup_that_fails_is_a_refusal_saying_to_retry() -> None:
    admission = Admission(Unreachable(), InjectionSettings(security_base_url="http://sec:9000"), clock=lambda: NOW)
    verdict = await admission.mutate(request(pod({"credward.io/credential": "app"})))
    assert verdict.reason == "LookupFailed"
    assert "HTTP 503" in verdict.message
    assert "retry shortly" in verdict.message


async def test_an_opted_in_pod_with_a_subpath_mount_is_refused_or_warned_in_the_same_call() -> None:
    obj = pod({"credward.io/credential": "app"})
    obj["spec"] = {
        "volumes": [{"name": "c", "secret": {"secretName": "app-credentials"}}],
        "containers": [{"name": "app", "volumeMounts": [{"name": "c", "mountPath": "/s", "subPath": "client-secret"}]}],
    }
    denied = await ADMISSION.mutate(request(obj))
    assert denied.reason == "RotationUnsafeConsumption"
    warned = await ADMISSION.mutate(request(obj), warn_only=True)
    assert warned.allowed
    assert warned.patch
    assert warned.warnings[0].startswith('credward: Pod web-*, container "app" mounts Secret app-credentials')

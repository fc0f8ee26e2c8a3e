"""The Mutating- and ValidatingWebhookConfiguration credward writes for itself (server-side apply).

* ``inject.pods.credward.io`` and ``inject-warn.pods.credward.io`` (mutating): Pods labelled
  ``credward.io/inject: "true"`` only (``objectSelector``), so ``failurePolicy: Fail`` can never
  block a pod that did not opt in; ``reinvocationPolicy: IfNeeded`` so a container another webhook
  adds later is injected too. The same call checks the pod for rotation-unsafe consumption, so an
  opted-in pod costs one round trip.
* ``{deny,warn}.pods.consumption.credward.io`` (Pods that did not opt in) and
  ``{deny,warn}.workloads.consumption.credward.io`` (the pod templates of Deployments,
  StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs), validating. They look at every pod,
  so they fail open (``Ignore``): a credward outage never blocks workloads that do not use credward.

The namespace label ``credward.io/secret-consumption=warn`` picks which of each pair sees a
namespace (refuse or warn), so the API server, not a cache of namespaces, decides. All skip the
operator's own namespace and kube-system, and have no side effects.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from credward.domain.injection import CONSUMPTION_WARN, LABEL_INJECT, LABEL_SECRET_CONSUMPTION
from credward.domain.webhook_tls import fingerprint, split_bundle
from credward.webhook.settings import WebhookSettings

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
PATH_MUTATE = "/mutate"
PATH_MUTATE_WARN = "/mutate/warn"
PATH_DENY = "/validate/deny"
PATH_WARN = "/validate/warn"
WORKLOADS = {
    "apps": ("deployments", "statefulsets", "daemonsets", "replicasets"),
    "batch": ("jobs", "cronjobs"),
}


def _client_config(settings: WebhookSettings, path: str, bundle: bytes) -> dict[str, Any]:
    ca = base64.b64encode(bundle).decode()
    if settings.url:
        return {"url": f"{settings.url}{path}", "caBundle": ca}
    service = {"namespace": settings.namespace, "name": settings.service, "port": settings.service_port, "path": path}
    return {"service": service, "caBundle": ca}


def _namespaces(settings: WebhookSettings, *extra: dict[str, Any]) -> dict[str, Any]:
    excluded = {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": list(settings.never_admitted_namespaces),
    }
    return {"matchExpressions": [excluded, *extra]}


def _common(settings: WebhookSettings) -> dict[str, Any]:
    return {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": settings.timeout_seconds,
        "matchPolicy": "Equivalent",
    }


POD_CREATE = {
    "operations": ["CREATE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["pods"],
    "scope": "Namespaced",
}
_WARN = {"key": LABEL_SECRET_CONSUMPTION, "values": [CONSUMPTION_WARN]}
# (name suffix, path suffix, namespace selector): namespaces without the warn label refuse, the others warn.
_MODES = (("", "", {**_WARN, "operator": "NotIn"}), ("-warn", "/warn", {**_WARN, "operator": "In"}))


def mutating(settings: WebhookSettings, bundle: bytes) -> dict[str, Any]:
    hooks = [
        {
            "name": f"inject{suffix}.pods.credward.io",
            "clientConfig": _client_config(settings, PATH_MUTATE + path, bundle),
            "rules": [POD_CREATE],
            "objectSelector": {"matchLabels": {LABEL_INJECT: "true"}},
            "namespaceSelector": _namespaces(settings, selector),
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            **_common(settings),
        }
        for suffix, path, selector in _MODES
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": settings.configuration, "labels": {"app.kubernetes.io/managed-by": "credward"}},
        "webhooks": hooks,
    }


def validating(settings: WebhookSettings, bundle: bytes) -> dict[str, Any]:
    """Workload templates, and the Pods that did not opt in (the mutating call already checked the others)."""
    workload_rules = [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [group],
            "apiVersions": ["v1"],
            "resources": list(resources),
            "scope": "Namespaced",
        }
        for group, resources in WORKLOADS.items()
    ]
    opted_out = {"matchExpressions": [{"key": LABEL_INJECT, "operator": "NotIn", "values": ["true"]}]}
    hooks = []
    for mode, path, selector in ((("deny", PATH_DENY, _MODES[0][2])), ("warn", PATH_WARN, _MODES[1][2])):
        for what, rules, objects in (("pods", [POD_CREATE], opted_out), ("workloads", workload_rules, None)):
            hook: dict[str, Any] = {
                "name": f"{mode}.{what}.consumption.credward.io",
                "clientConfig": _client_config(settings, path, bundle),
                "rules": rules,
                "namespaceSelector": _namespaces(settings, selector),
                "failurePolicy": "Ignore",
                **_common(settings),
            }
            if objects:
                hook["objectSelector"] = objects
            hooks.append(hook)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": settings.configuration, "labels": {"app.kubernetes.io/managed-by": "credward"}},
        "webhooks": hooks,
    }


class Configurations:
    """Writes both configurations and reports which CAs the API server is told to trust."""

    def __init__(self, api: client.ApiClient, settings: WebhookSettings) -> None:
        self._admission = client.AdmissionregistrationV1Api(api)
        self._settings = settings
        self._written: bytes | None = None

    async def published(self) -> frozenset[str]:
        """Fingerprints of the CAs every webhook of both configurations trusts (empty if one is missing)."""
        name = self._settings.configuration
        try:
            objs = [
                await self._admission.read_mutating_webhook_configuration(name),
                await self._admission.read_validating_webhook_configuration(name),
            ]
        except ApiException as exc:
            if exc.status == 404:
                return frozenset()
            raise
        trusted: frozenset[str] | None = None
        for obj in objs:
            for hook in obj.webhooks or ():
                bundle = hook.client_config.ca_bundle or ""
                try:
                    cas = frozenset(fingerprint(c) for c in split_bundle(base64.b64decode(bundle)))
                except ValueError:
                    cas = frozenset()
                trusted = cas if trusted is None else trusted & cas
        return trusted or frozenset()

    async def apply(self, bundle: bytes, *, force: bool = False) -> bool:
        """Server-side apply both with ``bundle``; skipped when this process already wrote that bundle."""
        if bundle == self._written and not force:
            return False
        name, manager = self._settings.configuration, self._settings.field_manager
        await self._admission.patch_mutating_webhook_configuration(
            name, mutating(self._settings, bundle), field_manager=manager, force=True, _content_type=APPLY
        )
        await self._admission.patch_validating_webhook_configuration(
            name, validating(self._settings, bundle), field_manager=manager, force=True, _content_type=APPLY
        )
        self._written = bundle
        log.info("webhook configurations %r now trust %d CA(s)", name, len(split_bundle(bundle)))
        return True

    async def delete(self) -> None:
        name = self._settings.configuration
        for delete in (
            self._admission.delete_mutating_webhook_configuration,
            self._admission.delete_validating_webhook_configuration,
        ):
            try:
                await delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

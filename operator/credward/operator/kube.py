"""The few Kubernetes API calls the operator makes, with errors sorted into credward's tree.

Writes use server-side apply with one field manager, so credward owns exactly
the fields it sets and removes the ones it stops setting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from credward.api import CREDENTIAL_KIND, CREDENTIAL_PLURAL, GROUP, VERSION
from credward.domain.credential import Event
from credward.errors import TransientError

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
REPORTING_CONTROLLER = "credward.io/operator"


async def load_config() -> None:
    """In-cluster service account if present, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()


def _transient(exc: ApiException, what: str) -> TransientError:
    delay = 30.0 if exc.status == 429 else 5.0
    return TransientError(f"{what}: HTTP {exc.status} {exc.reason}", delay=delay)


class Kube:
    """Typed wrapper over the API calls credward makes; one instance per operator."""

    def __init__(self, api: client.ApiClient, field_manager: str) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._field_manager = field_manager

    @staticmethod
    @asynccontextmanager
    async def connect(field_manager: str) -> AsyncIterator[Kube]:
        await load_config()
        async with client.ApiClient() as api:
            yield Kube(api, field_manager)

    async def get_credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIAL_PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _transient(exc, f"reading {CREDENTIAL_KIND} {namespace}/{name}") from None
        return obj

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _transient(exc, f"reading Secret {namespace}/{name}") from None
        obj: dict[str, Any] = self._api.sanitize_for_serialization(secret)
        return obj

    async def apply_secret(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        try:
            await self._core.patch_namespaced_secret(
                meta["name"],
                meta["namespace"],
                manifest,
                field_manager=self._field_manager,
                force=True,
                _content_type=APPLY,
            )
        except ApiException as exc:
            # Never include the body: it holds the client secret.
            raise _transient(exc, f"applying Secret {meta['namespace']}/{meta['name']}") from None

    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": CREDENTIAL_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                CREDENTIAL_PLURAL,
                name,
                body,
                field_manager=self._field_manager,
                force=True,
                _content_type=APPLY,
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing left to report on
            raise _transient(exc, f"writing status of {CREDENTIAL_KIND} {namespace}/{name}") from None

    async def post_event(self, involved: dict[str, Any], event: Event) -> None:
        """Record a Kubernetes Event (core/v1, what `kubectl describe` shows). Failures are only logged."""
        meta = involved["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=involved["apiVersion"],
                kind=involved["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            type=event.type,
            reason=event.reason,
            message=event.message,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="credward-operator"),
            reporting_component=REPORTING_CONTROLLER,
            reporting_instance="credward-operator",
        )
        try:
            await self._core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:
            log.warning(
                "could not record event %s on %s/%s: HTTP %s", event.reason, meta["namespace"], meta["name"], exc.status
            )

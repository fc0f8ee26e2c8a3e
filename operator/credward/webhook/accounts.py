"""Automatic accounts: a workload whose pod template says ``credward.io/credential: auto`` gets a credential.

Deployments, StatefulSets and Jobs are watched cluster-wide; for each that asks,
the ServiceAccountCredential :func:`credward.domain.injection.auto_credential`
describes is server-side applied (so replicas and repeated events write the same
thing, and an unchanged one is a no-op in the API server). It is owned by the
workload, so the garbage collector deletes it with the workload. Kept here and
not in admission: creating objects from a webhook would be a side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from credward.api import CREDENTIAL_PLURAL, GROUP, VERSION
from credward.domain.injection import ANNOTATION_CREDENTIAL_SPEC, Verdict, auto_credential, wants_auto_credential
from credward.webhook.settings import WebhookSettings

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"


class WorkloadAccounts:
    def __init__(self, api: client.ApiClient, settings: WebhookSettings) -> None:
        self._apps = client.AppsV1Api(api)
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        sources: list[tuple[str, Callable[..., Any]]] = [
            ("Deployment", self._apps.list_deployment_for_all_namespaces),
            ("StatefulSet", self._apps.list_stateful_set_for_all_namespaces),
            ("Job", self._batch.list_job_for_all_namespaces),
        ]
        self._tasks = [
            asyncio.create_task(self._watch(kind, lister), name=f"credward-auto-{kind}") for kind, lister in sources
        ]

    async def _watch(self, kind: str, lister: Callable[..., Any]) -> None:
        backoff = 0.5
        while True:
            try:
                # No resourceVersion: the API server first sends every existing object as ADDED.
                async for event in watch.Watch().stream(lister, allow_watch_bookmarks=True):
                    backoff = 0.5
                    if event["type"] in ("ADDED", "MODIFIED"):
                        await self.ensure(kind, event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else repr(exc)
                log.warning("watching %ss for automatic accounts failed (%s); again in %.1fs", kind, why, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def ensure(self, kind: str, workload: dict[str, Any]) -> None:
        """Apply the workload's credential if it asks for one; refusals are logged, never retried in a loop."""
        meta = workload.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        if namespace in self._settings.never_admitted_namespaces or not wants_auto_credential(kind, workload):
            return
        if meta.get("deletionTimestamp"):
            return
        ns = await self._core.read_namespace(namespace)
        default = (ns.metadata.annotations or {}).get(ANNOTATION_CREDENTIAL_SPEC)
        manifest = auto_credential(kind, workload, default)
        if isinstance(manifest, Verdict):
            log.warning("no automatic credential for %s %s/%s: %s", kind, namespace, meta.get("name"), manifest.message)
            return
        name = manifest["metadata"]["name"]
        try:
            await self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                CREDENTIAL_PLURAL,
                name,
                json.loads(json.dumps(manifest)),
                field_manager=self._settings.field_manager,
                force=True,
                _content_type=APPLY,
            )
        except ApiException as exc:
            log.warning("automatic credential %s/%s for %s: HTTP %s %s", namespace, name, kind, exc.status, exc.reason)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

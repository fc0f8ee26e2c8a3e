"""kopf wiring: which events trigger a reconcile of which account. No decisions here.

Only event-watching handlers are used: kopf keeps no progress annotations, so
an operator restart with up-to-date objects writes nothing. The one finalizer
(account cleanup in the security service) is credward's own, added and removed
by the controller.

- ServiceAccountCredential events reconcile that account.
- Owned Secrets are watched too (selected by label in the API server, so no
  other Secret ever reaches the operator) and mapped to their credential by
  *owner reference*, never by a label someone may edit. A Secret whose
  ``managed-by`` label is removed leaves the selection: the API server sends a
  DELETED event for it, which reconciles its owner, which restores the label.
- RoleBinding events reconcile the account they name (deleting one re-pushes
  the remaining set).
- A background task polls the security service's ``/v1/admin/info`` and
  resyncs everything when the service returns or its store changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, cast

import kopf

from credward.api import (
    CREDENTIAL_KIND,
    CREDENTIAL_PLURAL,
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ROLEBINDING_PLURAL,
    VERSION,
)
from credward.errors import KubeUnavailable
from credward.operator.cache import BINDINGS, CREDENTIALS, SECRETS, CachedKube, WatchCache
from credward.operator.controller import CredentialController
from credward.operator.kube import Kube, RateLimit
from credward.operator.metrics import HealthServer, OperatorMetrics
from credward.operator.service import AdminClient
from credward.operator.settings import OperatorSettings, read_hash_key
from credward.webhook import WebhookRuntime, WebhookSettings

log = logging.getLogger(__name__)


def owner_credential(meta: Mapping[str, Any]) -> str | None:
    """The ServiceAccountCredential that controls an object, by its owner reference."""
    for ref in meta.get("ownerReferences") or ():
        api_version = str(ref.get("apiVersion", ""))
        if ref.get("controller") and ref.get("kind") == CREDENTIAL_KIND and api_version.startswith(f"{GROUP}/"):
            name = ref.get("name")
            return str(name) if name else None
    return None


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No diff-base: only change handlers (``on.create``/``on.update``) use one, and credward has none."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


CACHE_WAIT = 60.0  # seconds the watches may take to deliver what the start-up listing found


async def _listed(direct: Kube, plural: str, namespaces: tuple[str, ...], selector: str | None) -> list[dict[str, Any]]:
    """The start-up listing, retried a while when the API server cannot answer yet (a CRD just installed: 429)."""
    delay = 0.25
    while True:
        try:
            return await direct.list_all(plural, namespaces, selector)
        except KubeUnavailable as exc:
            if delay > 16:
                raise
            log.info("%s; listing again in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            delay *= 2


async def _complete_within(cache: WatchCache, seconds: float) -> None:
    """What the watches never deliver was deleted between the listing and their start: drop it, go on."""
    try:
        await asyncio.wait_for(cache.complete.wait(), seconds)
    except TimeoutError:
        gone = cache.give_up_waiting()
        log.warning("%d object(s) listed at start-up were deleted before the watches began", len(gone))


def build_registry(settings: OperatorSettings, webhook: WebhookSettings | None = None) -> kopf.OperatorRegistry:
    """A registry with credward's handlers, bound to ``settings`` (no module-level state)."""
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}
    cache = WatchCache()  # the controller's reads (cache.py): filled at start-up, then fed by every event

    @kopf.on.startup(registry=registry)
    async def startup(**kwargs: Any) -> None:
        kopf_settings: kopf.OperatorSettings = kwargs["settings"]
        kopf_settings.posting.enabled = False  # credward records its own events; kopf's would repeat them
        # Filter Secrets in the API server, not here: the operator never receives other Secrets at all.
        kopf_settings.watching.label_selectors["secrets"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        # credward has event handlers only (no change handlers), so kopf needs no diff-base of each object:
        # building one deep-copies every event's body (Secrets and managedFields included).
        kopf_settings.persistence.diffbase_storage = NoDiffBase()
        # kopf logs "Handler ... succeeded" at INFO for every event (thousands at scale); failures still log.
        logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
        stack = AsyncExitStack()
        state["stack"] = stack
        rate_limit = RateLimit(settings.kube_qps, settings.kube_burst)
        direct = await stack.enter_async_context(Kube.connect(settings.field_manager, rate_limit))
        kube = CachedKube(direct, cache)
        state["kube"] = kube
        # One listing per kind before the watches start (startup handlers run first): a restart reads
        # nothing per object. A failure here stops the start: reconciling from a partial view could drop
        # an account's role mappings.
        for kind, plural, selector in (
            (CREDENTIALS, CREDENTIAL_PLURAL, None),
            (SECRETS, "secrets", f"{LABEL_MANAGED_BY}={MANAGED_BY}"),
            (BINDINGS, ROLEBINDING_PLURAL, None),
        ):
            cache.fill(kind, await _listed(direct, plural, settings.namespaces, selector))
        cache.seen(CREDENTIALS, {"metadata": {"name": ""}})  # complete at once if there was nothing
        service = await stack.enter_async_context(
            AdminClient.connect(
                settings.security_base_url, settings.token_file, settings.service_timeout.total_seconds()
            )
        )
        metrics = OperatorMetrics()
        controller = CredentialController(
            kube, service, settings, read_hash_key(settings.hash_key_file), metrics=metrics
        )
        state["controller"] = controller
        controller.requeue.hold_until(cache.complete)
        state["cache-wait"] = asyncio.create_task(_complete_within(cache, CACHE_WAIT))
        if settings.liveness_port:
            health = HealthServer(metrics, settings.liveness_port, lambda: len(controller.requeue.pending()))
            await health.start()
            stack.push_async_callback(health.stop)
        await controller.refresh_info()
        state["poller"] = asyncio.create_task(controller.poll_info_forever())
        if webhook is not None:  # the admission webhook (docs/webhook.md) runs in the operator's event loop
            runtime = await WebhookRuntime.start_from_settings(webhook)
            stack.push_async_callback(runtime.stop)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The Pod's ServiceAccount in a cluster, else $KUBECONFIG (as kubectl does)."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        return info

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task_name in ("poller", "cache-wait"):
            task: asyncio.Task[None] | None = state.pop(task_name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        controller: CredentialController | None = state.get("controller")
        if controller is not None:
            controller.requeue.close()
        stack: AsyncExitStack | None = state.pop("stack", None)
        if stack is not None:
            await stack.aclose()

    # -- the watch cache (cache.py) ---------------------------------------------------------------------------
    # Every event keeps its object in the cache; no reconcile starts before the cache is complete
    # (filled by one listing per kind at start-up, then every object of it delivered by the watches).

    def _seen(kind: str, kwargs: Mapping[str, Any]) -> bool:
        """Record a deletion; False for the echo of credward's own write (nothing new to reconcile)."""
        obj = kwargs["event"]["object"]
        if kwargs["type"] == "DELETED":
            cache.delete(kind, obj)
            cache.seen(kind, obj)
            if kind == CREDENTIALS and "kube" in state:
                state["kube"].forget(kwargs["namespace"], kwargs["name"])
            return True
        cache.put(kind, obj)
        cache.seen(kind, obj)
        return not cache.is_echo(kind, obj)

    # -- event handlers ------------------------------------------------------------------------------------

    @kopf.on.event(GROUP, VERSION, CREDENTIAL_PLURAL, id="credential", registry=registry)
    async def credential_event(**kwargs: Any) -> None:
        if not _seen(CREDENTIALS, kwargs):
            return
        controller: CredentialController = state["controller"]
        # DELETED too: the bindings of a credential that is gone wait for it (Synced=False AccountNotFound).
        # Through the work queue: a burst of events makes one reconcile per key, a bounded number at once.
        controller.trigger(kwargs["namespace"], kwargs["name"])

    @kopf.on.event("", "v1", "secrets", id="owned-secret", registry=registry)
    async def owned_secret_event(**kwargs: Any) -> None:
        if not _seen(SECRETS, kwargs) or kwargs["type"] not in ("MODIFIED", "DELETED"):
            return  # the initial listing and our own creations: the credential's events cover those
        credential = owner_credential(kwargs["meta"])
        if credential:
            state["controller"].trigger(kwargs["namespace"], credential)

    @kopf.on.event(GROUP, VERSION, ROLEBINDING_PLURAL, id="rolebinding", registry=registry)
    async def rolebinding_event(**kwargs: Any) -> None:
        if not _seen(BINDINGS, kwargs):
            return
        # Every change (deletion included) reconciles the account the binding names; a burst makes one reconcile.
        account = (kwargs["spec"] or {}).get("serviceAccount")
        if account:
            state["controller"].trigger(kwargs["namespace"], account)

    return registry

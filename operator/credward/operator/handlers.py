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
from datetime import timedelta
from typing import Any, cast

import kopf
from kubernetes_asyncio.client import ApiClient

from credward.api import (
    CREDENTIAL_KIND,
    CREDENTIAL_PLURAL,
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ROLEBINDING_PLURAL,
    VERSION,
)
from credward.domain.restarts import ANNOTATION_RESTART_ON_ROTATION
from credward.domain.signing_keys import KeyPolicy
from credward.errors import KubeUnavailable, SettingsError, TransientError
from credward.operator.cache import BINDINGS, CREDENTIALS, SECRETS, CachedKube, WatchCache
from credward.operator.controller import CredentialController
from credward.operator.kube import Kube, RateLimit, load_config
from credward.operator.leader import LeaderElector
from credward.operator.metrics import HealthServer, OperatorMetrics
from credward.operator.restarts import RESOURCES as RESTART_RESOURCES
from credward.operator.restarts import Restarts
from credward.operator.service import AdminClient
from credward.operator.settings import OperatorSettings, read_hash_key
from credward.operator.shared_secrets import NamespaceSecrets, ensure_signing_keys, hash_key_from_secret
from credward.operator.signing import SigningKeyManager
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
        hash_key = await _shared_secrets(settings)  # before the stack: a retried startup leaks nothing
        stack = AsyncExitStack()
        state["stack"] = stack
        rate_limit = RateLimit(settings.kube_qps, settings.kube_burst)
        direct = await stack.enter_async_context(Kube.connect(settings.field_manager, rate_limit))
        kube = CachedKube(direct, cache)
        state["kube"] = kube
        service = await stack.enter_async_context(
            AdminClient.connect(
                settings.security_base_url, settings.token_file, settings.service_timeout.total_seconds()
            )
        )
        metrics = OperatorMetrics()
        controller = CredentialController(kube, service, settings, hash_key, metrics=metrics)
        state["controller"] = controller
        controller.requeue.hold_until(cache.complete)
        if settings.liveness_port:
            health = HealthServer(metrics, settings.liveness_port, lambda: len(controller.requeue.pending()))
            await health.start()
            stack.push_async_callback(health.stop)
        runtime: WebhookRuntime | None = None
        if webhook is not None:  # the admission webhook (docs/webhook.md) runs in the operator's event loop
            runtime = await WebhookRuntime.start_from_settings(webhook, leading=settings.leader_election is None)
            stack.push_async_callback(runtime.stop)
        # --- leader election: every replica serves the webhook and /healthz; only the leader goes on from here.
        # kopf starts no watch before this handler returns, so a standby reconciles nothing.
        elector: LeaderElector | None = None
        if settings.leader_election is not None:
            try:
                elector = await stack.enter_async_context(LeaderElector.connect(settings.leader_election))
                await elector.acquire()
                if runtime is not None:
                    await runtime.lead()
            except BaseException:  # stopped while waiting (SIGTERM): kopf runs no cleanup for a startup cut short
                await stack.aclose()
                raise
        # --- end of leader election
        # One listing per kind before the watches start (startup handlers run first; on the leader only, so
        # a standby's listing never goes stale while it waits): a restart reads
        # nothing per object. A failure here stops the start: reconciling from a partial view could drop
        # an account's role mappings.
        for kind, plural, selector in (
            (CREDENTIALS, CREDENTIAL_PLURAL, None),
            (SECRETS, "secrets", f"{LABEL_MANAGED_BY}={MANAGED_BY}"),
            (BINDINGS, ROLEBINDING_PLURAL, None),
        ):
            cache.fill(kind, await _listed(direct, plural, settings.namespaces, selector))
        cache.seen(CREDENTIALS, {"metadata": {"name": ""}})  # complete at once if there was nothing
        state["cache-wait"] = asyncio.create_task(_complete_within(cache, CACHE_WAIT))
        await controller.refresh_info()
        state["poller"] = asyncio.create_task(controller.poll_info_forever())
        # -- signing-key rotation (docs/operator.md, "Signing keys") --------------------------------------------
        if settings.signing_keys_secret and settings.pod_namespace:
            api = await stack.enter_async_context(ApiClient())

            def max_token_ttl() -> timedelta | None:
                info = controller.info
                return timedelta(seconds=info.max_token_ttl_seconds) if info is not None else None

            manager = SigningKeyManager(
                NamespaceSecrets.of(api, settings.pod_namespace),
                settings.signing_keys_secret,
                KeyPolicy(
                    period=settings.signing_key_period,
                    jwks_cache=settings.signing_key_jwks_cache,
                    propagation=settings.signing_key_propagation,
                    clock_skew=settings.signing_key_clock_skew,
                ),
                settings.signing_key_alg,
                max_token_ttl=max_token_ttl,
                post_event=kube.post_event,
                # Started only once this replica leads (above); a leader that loses the Lease exits.
                is_leader=lambda: elector is None or elector.leading,
                resync=settings.resync,
                recheck=settings.info_interval,
                backoff_max=settings.backoff_max,
            )
            state["signing"] = asyncio.create_task(manager.run_forever())

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The Pod's ServiceAccount in a cluster, else $KUBECONFIG (as kubectl does)."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        return info

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task_name in ("signing", "poller", "cache-wait"):  # signing: the key rotation
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

    # -- coalesced restarts on rotation (credward.operator.restarts, docs/operator.md) -------------------------
    # Workloads that opted in are looked at when their template or credward's annotations change and when a
    # credward Secret they name changes; each look decides afresh from what is stored.

    @kopf.on.startup(registry=registry)
    async def restarts_startup(**_: Any) -> None:
        stack = AsyncExitStack()
        state["restarts_stack"] = stack
        state["restarts"] = await stack.enter_async_context(
            Restarts.connect(
                debounce=settings.restart_debounce,
                max_wait=settings.restart_max_wait,
                field_manager=settings.field_manager,
                backoff_max=settings.backoff_max,
            )
        )

    @kopf.on.cleanup(registry=registry)
    async def restarts_cleanup(**_: Any) -> None:
        stack: AsyncExitStack | None = state.pop("restarts_stack", None)
        if stack is not None:
            await stack.aclose()

    def restart_workload_handler(kind: str, plural: str) -> None:
        @kopf.on.event(
            "apps",
            "v1",
            plural,
            id=f"restart-{plural}",
            annotations={ANNOTATION_RESTART_ON_ROTATION: "true"},
            registry=registry,
        )
        async def workload_event(**kwargs: Any) -> None:
            state["restarts"].workload_event(kind, kwargs["type"], kwargs["body"])

    for kind, plural in RESTART_RESOURCES.items():
        restart_workload_handler(kind, plural)

    @kopf.on.event("", "v1", "secrets", id="restart-secret", registry=registry)
    async def restart_secret_event(**kwargs: Any) -> None:
        if kwargs["type"] is None:
            return  # the initial listing: every opted-in workload is looked at once anyway
        state["restarts"].secret_event(kwargs["namespace"], kwargs["name"], owner_credential(kwargs["meta"]))

    return registry


# -- shared Secrets (docs/operator.md, "Shared Secrets") ----------------------------------------------------------


async def _shared_secrets(settings: OperatorSettings) -> bytes:
    """The secret-hash key (file or Secret); the signing-keys Secret created if absent. Bad Secrets stop the start."""
    namespace = settings.pod_namespace
    if not (settings.hash_key_secret or settings.signing_keys_secret) or namespace is None:
        assert settings.hash_key_file is not None  # settings require the file when there is no Secret
        return read_hash_key(settings.hash_key_file)
    await load_config()
    async with ApiClient() as api:
        store = NamespaceSecrets.of(api, namespace)
        try:
            if settings.signing_keys_secret:
                await ensure_signing_keys(store, settings.signing_keys_secret, settings.signing_key_alg)
            if settings.hash_key_secret:
                return await hash_key_from_secret(store, settings.hash_key_secret)
        except SettingsError as exc:
            raise kopf.PermanentError(str(exc)) from None
        except TransientError as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    assert settings.hash_key_file is not None
    return read_hash_key(settings.hash_key_file)

"""Reconcile one account: gather, decide (pure), carry out in order, and always schedule the next look.

Level-based: every trigger (credential event, owned-Secret event, RoleBinding
event, wake-up, a changed service store) leads to the same
``reconcile(namespace, name)`` on freshly read objects, so stale event bodies
and restarts cannot lead to different decisions. One key is one
ServiceAccountCredential *and* the RoleBindings that name it: the account's
role mappings have one writer, under one lock.

Order of the writes: finalizer, then the service (revoke, account, role
mappings), then the Secret, then — for a rotation — the old secret's deadline
in the service, then status, binding statuses and events. Named fault points
(:mod:`credward.operator.faults`) sit between these steps. A write
that fails feeds back into ``decide`` (see :mod:`credward.domain.credential`),
so the status written says why.

Every exception has a fate: ``TransientError`` backs off (capped, exponential)
and retries; ``Refused`` becomes a condition and a Warning Event and backs
off; ``Gone`` (a namespace being deleted included) ends the work on the key
without a retry loop; anything else is a bug: logged with its traceback,
counted in ``credward_operator_unexpected_errors_total`` and retried with
the same backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from credward.api import ANNOTATION_CLIENT_ID, API_VERSION, CREDENTIAL_KIND, ROLEBINDING_KIND
from credward.api.admin import ServiceInfo
from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain import rolebinding
from credward.domain.credential import (
    FINALIZER,
    REASON_STILL_IN_USE,
    Candidate,
    CredentialInput,
    CredentialRef,
    Event,
    ObservedSecret,
    Plan,
    ServiceHolds,
    ServiceRefusal,
    ServiceState,
    ServiceUnreachable,
    cleanup_action,
    decide,
)
from credward.domain.durations import format_duration
from credward.domain.rolebinding import BindingUpdate, ObservedBinding, SyncOutcome
from credward.domain.rotation import ANNOTATION_ROTATE, ANNOTATION_ROTATE_NOW
from credward.domain.timefmt import parse_rfc3339
from credward.errors import (
    Gone,
    InvalidSpec,
    KubeRefused,
    Refused,
    ServiceRefused,
    ServiceUnavailable,
    TransientError,
)
from credward.operator import faults
from credward.operator.metrics import OperatorMetrics
from credward.operator.requeue import Key, Requeue
from credward.operator.service import SecurityService
from credward.operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class KubeApi(Protocol):
    """What the controller needs of :class:`credward.operator.kube.Kube` (injectable in unit tests)."""

    async def get_credential(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def list_bindings(self, namespace: str, account: str | None = None) -> list[dict[str, Any]]: ...
    async def apply_secret(self, manifest: dict[str, Any]) -> None: ...
    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def apply_binding_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def add_finalizer(self, body: dict[str, Any]) -> None: ...
    async def remove_finalizer(self, body: dict[str, Any]) -> None: ...
    async def post_event(self, involved: dict[str, Any], event: Event) -> None: ...


class CredentialController:
    def __init__(
        self,
        kube: KubeApi,
        service: SecurityService,
        settings: OperatorSettings,
        hash_key: bytes,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = _now,
        candidates: Callable[[], Candidate] = Candidate.generate,
    ) -> None:
        self._kube = kube
        self._service = service
        self._settings = settings
        self._hash_key = hash_key
        self._clock = clock
        self._candidates = candidates
        self.metrics = metrics or OperatorMetrics()
        self._locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._confirmed: dict[Key, str] = {}  # push fingerprints the service accepted (saves pushes only)
        self._known: set[Key] = set()
        self._cleanup_warned: set[Key] = set()
        self.info: ServiceInfo | None = None
        self._info_at = float("-inf")
        self.requeue = Requeue(
            self._wake, backoff_max=settings.backoff_max.total_seconds(), on_unexpected=self._count_unexpected
        )

    # -- triggers --------------------------------------------------------------------------------------------

    async def _wake(self, key: Key) -> None:
        await self.reconcile(*key)

    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile soon; several triggers before it runs make one reconcile."""
        self.requeue.sooner((namespace, name), 0.0)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.requeue.forget(key)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]
        self._confirmed.pop(key, None)
        self._known.discard(key)
        self._cleanup_warned.discard(key)
        self.metrics.forget(namespace, name)

    def resync_all(self, within: float = 2.0) -> None:
        """Look at every known credential again within ``within`` seconds (spread, not all at once)."""
        keys = sorted(self._known)
        for i, key in enumerate(keys):
            self.requeue.sooner(key, within * i / max(len(keys), 1))

    def _count_unexpected(self, key: Key, exc: BaseException) -> None:
        self.metrics.unexpected.labels(error=type(exc).__name__).inc()

    # -- the service's store ---------------------------------------------------------------------------------

    async def refresh_info(self) -> None:
        """Poll ``GET /v1/admin/info``; an outage, a service back from one, a new store or hash key resyncs all."""
        previous = self.info
        try:
            info = await self._service.info()
        except (ServiceUnavailable, ServiceRefused) as exc:
            self.info = None
            self.metrics.service_up.set(0)
            if previous is not None:
                # Ready means a workload can get a token now: every credential says the service is gone.
                log.warning("security service: %s; every credential is looked at again", exc)
                self.resync_all()
            return
        self.info, self._info_at = info, asyncio.get_running_loop().time()
        self.metrics.service_up.set(1)
        if previous is None or (previous.store_id, previous.hash_key_id) != (info.store_id, info.hash_key_id):
            if previous is not None:
                log.info("security service store or hash key changed: registering every account again")
            self._confirmed.clear()
            self.resync_all()

    async def poll_info_forever(self) -> None:
        while True:
            try:
                await self.refresh_info()
            except Exception as exc:  # a bug must not end the poller: count it and go on
                log.exception("polling the security service failed")
                self._count_unexpected(("", "info"), exc)
            await asyncio.sleep(self._settings.info_interval.total_seconds())

    async def _current_info(self) -> ServiceInfo:
        loop = asyncio.get_running_loop()
        if self.info is not None and loop.time() - self._info_at < self._settings.info_interval.total_seconds():
            return self.info
        info = await self._service.info()
        if self.info is not None and (self.info.store_id, self.info.hash_key_id) != (info.store_id, info.hash_key_id):
            self._confirmed.clear()
        self.info, self._info_at = info, loop.time()
        return info

    async def _service_state(self, key: Key, client_id: str | None) -> ServiceState:
        try:
            info = await self._current_info()
            view = await self._service.get_account(client_id) if client_id else None
        except ServiceUnavailable as exc:
            return ServiceUnreachable(str(exc))
        except ServiceRefused as exc:
            return ServiceRefusal(exc.message)
        return ServiceHolds(info, view, self._confirmed.get(key))

    # -- reconcile -------------------------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one account up to date; whatever happens, schedule its next look (or know it is gone)."""
        key = (namespace, name)
        self.metrics.queue_depth.inc()
        try:
            await self._reconcile_locked(key)
        finally:
            self.metrics.queue_depth.dec()

    async def _reconcile_locked(self, key: Key) -> None:
        namespace, name = key
        async with self._locks[key]:
            delay: float | None
            started = time.perf_counter()
            try:
                delay = await self._reconcile(namespace, name)
                self.metrics.reconciles.labels(result="ok").inc()
            except Gone as exc:
                log.debug("%s/%s: %s; nothing left to do", namespace, name, exc)
                self.metrics.reconciles.labels(result="gone").inc()
                delay = None
            except TransientError as exc:
                delay = min(max(self.requeue.backoff(key), exc.delay), self._settings.backoff_max.total_seconds())
                log.warning("%s/%s: %s; retrying in %.0fs", namespace, name, exc, delay)
                self.metrics.retries.labels(reason=type(exc).__name__).inc()
                self.metrics.reconciles.labels(result="retry").inc()
            except Refused as exc:
                delay = self.requeue.backoff(key)
                log.error("%s/%s: refused: %s; retrying in %.0fs", namespace, name, exc, delay)
                self.metrics.retries.labels(reason=type(exc).__name__).inc()
                self.metrics.reconciles.labels(result="refused").inc()
            except InvalidSpec as exc:
                delay = self._settings.resync.total_seconds()
                log.error("%s/%s: %s", namespace, name, exc)
                self.metrics.reconciles.labels(result="invalid").inc()
            except Exception as exc:
                delay = self.requeue.backoff(key)
                log.exception("%s/%s: unexpected %s; retrying in %.0fs", namespace, name, type(exc).__name__, delay)
                self._count_unexpected(key, exc)
                self.metrics.reconciles.labels(result="unexpected").inc()
            if delay is None:
                self.forget(namespace, name)
            else:
                self.requeue.after(key, delay)
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        lock = self._locks.get(key)
        if key not in self._known and lock is not None and not lock.locked():
            del self._locks[key]  # a gone key keeps no lock

    async def _reconcile(self, namespace: str, name: str) -> float | None:
        key = (namespace, name)
        body = await self._kube.get_credential(namespace, name)
        if body is None:
            await self._orphans(namespace, name)
            return None
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return await self._finalize(body)
        self._known.add(key)
        try:
            spec = CredentialSpec.model_validate(body.get("spec") or {})
            status = CredentialStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            raise InvalidSpec(f"cannot read {CREDENTIAL_KIND} {namespace}/{name}: {exc}") from None
        ref = CredentialRef(
            namespace=namespace,
            name=name,
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            created=parse_rfc3339(meta["creationTimestamp"]),
        )
        raw = await self._kube.get_secret(namespace, spec.effective_secret_name(name))
        observed = ObservedSecret.from_manifest(raw, self._settings.field_manager) if raw is not None else None
        bindings = await self._bindings_of(namespace, name)
        client_id = status.client_id or (observed.annotations.get(ANNOTATION_CLIENT_ID) if observed else None)
        inp = CredentialInput(
            ref=ref,
            spec=spec,
            status=status,
            secret=observed,
            bindings=bindings,
            service=await self._service_state(key, client_id),
            hash_key=self._hash_key,
            candidate=self._candidates(),
            endpoints=self._settings.endpoints,
            has_finalizer=FINALIZER in (meta.get("finalizers") or ()),
            rotate_request=(meta.get("annotations") or {}).get(ANNOTATION_ROTATE),
            rotate_now=(meta.get("annotations") or {}).get(ANNOTATION_ROTATE_NOW),
        )
        now = self._clock()
        plan = self._decide(inp, now)
        first = plan
        if plan.add_finalizer:
            await self._kube.add_finalizer(body)
            inp = replace(inp, has_finalizer=True)
        inp, plan = await self._push(key, inp, plan, now)
        faults.reached(plan.step, "registered" if plan.step != "retire" else "unregistered")
        self._count_push_failure(first, inp)
        if plan.secret is not None:
            try:
                await self._kube.apply_secret(plan.secret)
                log.info("%s/%s: applied Secret %s", namespace, name, plan.secret["metadata"]["name"])
                faults.reached(plan.step, "secret-written")
                plan = await self._push_deadline(key, plan)
            except KubeRefused as exc:
                log.error("%s/%s: the API server refused the Secret: %s", namespace, name, exc.message)
                plan = self._decide(inp.failed(secret_refusal=exc.message), now)
                if first.facts.rotated is not None:
                    self.metrics.rotation_failures.labels(step="secret").inc()
        plan = await self._report(body, plan)
        self.metrics.credential(namespace, name, plan.facts)
        warned = sum(e.reason == REASON_STILL_IN_USE for e in plan.events)
        if warned:
            self.metrics.still_in_use_warnings.inc(warned)
        log.debug("%s/%s: reconciled (%d Kubernetes writes)", namespace, name, plan.writes)
        if plan.retry:
            return self.requeue.backoff(key)
        self.requeue.succeeded(key)
        return plan.requeue_after.total_seconds()

    def _count_push_failure(self, first: Plan, inp: CredentialInput) -> None:
        """A push the service did not take: a registration error, and a failed rotation if one was due."""
        if first.account is None:
            return
        if isinstance(inp.service, ServiceUnreachable | ServiceRefusal):
            kind = "unreachable" if isinstance(inp.service, ServiceUnreachable) else "refused"
            self.metrics.registration_errors.labels(kind=kind).inc()
            if first.facts.rotated is not None:
                self.metrics.rotation_failures.labels(step="register").inc()

    def _decide(self, inp: CredentialInput, now: datetime) -> Plan:
        return decide(
            inp,
            now,
            resync=self._settings.resync,
            conflict_recheck=self._settings.conflict_recheck,
        )

    async def _bindings_of(self, namespace: str, name: str) -> tuple[ObservedBinding, ...]:
        bindings = (ObservedBinding.from_manifest(b) for b in await self._kube.list_bindings(namespace, account=name))
        return tuple(b for b in bindings if b.service_account == name)

    async def _push(self, key: Key, inp: CredentialInput, plan: Plan, now: datetime) -> tuple[CredentialInput, Plan]:
        """The service's writes of ``plan``; on a failure, the input with that failure and the plan for it."""
        client_id = plan.client_id
        if client_id is None or (plan.account is None and plan.mappings is None and not plan.revoke):
            return inp, plan
        try:
            if plan.revoke:
                await self._service.revoke(client_id)
            if plan.account is not None:
                view = await self._service.put_account(client_id, plan.account)
                # A rotation's first push is not what the account should finally hold: confirm the deadline push.
                confirm = plan.confirm if plan.deadline is None else None
                if confirm is not None:
                    self._confirmed[key] = confirm
                if isinstance(inp.service, ServiceHolds):
                    inp = replace(inp, service=replace(inp.service, account=view, confirmed=confirm))
                log.info("%s/%s: registered client %s with the security service", *key, client_id)
        except ServiceUnavailable as exc:
            inp = inp.failed(service=ServiceUnreachable(str(exc)))
            return inp, self._decide(inp, now)
        except ServiceRefused as exc:
            inp = inp.failed(service=ServiceRefusal(exc.message))
            return inp, self._decide(inp, now)
        if plan.mappings is None:
            return inp, plan
        failure: SyncOutcome | None = None
        try:
            held = await self._service.put_role_mappings(client_id, plan.mappings)
            if held is None:
                failure = SyncOutcome(
                    False, rolebinding.REASON_PENDING, "The account disappeared from the security service; retrying"
                )
            else:
                log.info("%s/%s: pushed %d role mapping(s)", *key, len(plan.mappings.mappings))
        except ServiceUnavailable as exc:
            failure = SyncOutcome(False, rolebinding.REASON_SERVICE_UNREACHABLE, f"Retrying with backoff: {exc}")
        except ServiceRefused as exc:
            message = f"The security service refused the role mappings: {exc.message}"
            failure = SyncOutcome(False, rolebinding.REASON_REFUSED, message)
        if failure is None:
            return inp, plan
        inp = inp.failed(mappings_failure=failure)
        return inp, self._decide(inp, now)

    async def _push_deadline(self, key: Key, plan: Plan) -> Plan:
        """A rotation's second push, once the Secret holds the new secret: the old secret's ``notAfter``.

        If it fails, the status is written all the same and the reconcile is retried: the next decision finds
        the service without the deadline the Secret records and pushes it (an old secret is never stranded).
        """
        if plan.deadline is None or plan.client_id is None:
            return plan
        try:
            await self._service.put_account(plan.client_id, plan.deadline)
        except (ServiceUnavailable, ServiceRefused) as exc:
            log.warning("%s/%s: the old secret's deadline is not registered yet (%s); retrying", *key, exc)
            return replace(plan, retry=True)
        if plan.confirm is not None:
            self._confirmed[key] = plan.confirm
        log.info("%s/%s: registered the previous secret's deadline with the security service", *key)
        faults.reached(plan.step, "deadline-registered")
        return plan

    async def _report(self, body: dict[str, Any], plan: Plan) -> Plan:
        """Status, binding statuses and events. A refused status write is told as an event and retried."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        events = list(plan.events)
        if plan.status is not None:
            try:
                await self._kube.apply_credential_status(namespace, name, plan.status)
                faults.reached(plan.step, "status-written")
            except KubeRefused as exc:
                events.append(Event("Warning", "StatusRefused", f"The API server refused the status: {exc.message}"))
                plan = replace(plan, retry=True)
        for event in events:
            log.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
            await self._kube.post_event(body, event)
        await self._write_bindings(namespace, plan.bindings)
        return plan

    async def _write_bindings(self, namespace: str, updates: tuple[BindingUpdate, ...]) -> None:
        for update in updates:
            try:
                await self._kube.apply_binding_status(namespace, update.name, update.status)
            except KubeRefused as exc:
                log.error("%s/%s: the API server refused the RoleBinding status: %s", namespace, update.name, exc)
                continue
            if update.warning is not None:
                involved = {
                    "apiVersion": API_VERSION,
                    "kind": ROLEBINDING_KIND,
                    "metadata": {"namespace": namespace, "name": update.name, "uid": update.uid},
                }
                await self._kube.post_event(involved, Event("Warning", *update.warning))

    async def _orphans(self, namespace: str, name: str) -> None:
        """No credential of that name: its bindings (if any) wait for it."""
        bindings = await self._bindings_of(namespace, name)
        await self._write_bindings(namespace, rolebinding.orphan_updates(bindings, name, self._clock()))

    async def _finalize(self, body: dict[str, Any]) -> float | None:
        """Revoke and remove the account in the service, then let the deletion go on; never block it forever."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if FINALIZER not in (meta.get("finalizers") or ()):
            return None
        client_id = (body.get("status") or {}).get("clientId")
        since = parse_rfc3339(meta["deletionTimestamp"])
        now = self._clock()
        timeout = self._settings.cleanup_timeout
        annotations = meta.get("annotations") or {}
        action = cleanup_action(client_id, annotations, since, now, timeout, last_failed=False)
        if action == "delete" and client_id is not None:
            try:
                # Revoked first: the feed tells validators to refuse the account's live tokens, which the
                # deletion alone would leave valid until their exp. Both are idempotent, so a crash between is fine.
                await self._service.revoke(client_id)
                await self._service.delete_account(client_id)
                log.info("%s/%s: revoked and removed client %s from the security service", *key, client_id)
            except (ServiceUnavailable, ServiceRefused) as exc:
                action = cleanup_action(client_id, annotations, since, now, timeout, last_failed=True)
                if action != "give-up":
                    left = (since + timeout - now).total_seconds()
                    delay = max(min(self.requeue.backoff(key), left), 1.0)
                    log.warning("%s/%s: cannot remove the account yet (%s); retrying in %.0fs", *key, exc, delay)
                    if key not in self._cleanup_warned:
                        self._cleanup_warned.add(key)
                        message = (
                            f"Cannot remove client {client_id} from the security service yet ({exc}); retrying "
                            f"until {_hms(timeout)} after the deletion began, then deleting anyway"
                        )
                        await self._kube.post_event(body, Event("Warning", "AccountCleanupPending", message))
                    return delay
                message = (
                    f"Gave up removing client {client_id} from the security service after {_hms(timeout)} ({exc}); "
                    f"deleting the credential anyway. Remove the account with DELETE /v1/admin/accounts/{client_id}"
                )
                log.error("%s/%s: %s", *key, message)
                await self._kube.post_event(body, Event("Warning", "AccountCleanupAbandoned", message))
        await self._kube.remove_finalizer(body)
        self.forget(*key)
        return None


def _hms(value: timedelta) -> str:
    return format_duration(value)

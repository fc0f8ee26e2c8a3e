"""Coalesced rolling restarts on rotation: the I/O around :mod:`credward.domain.restarts`.

Triggers only say *which workload to look at*; every look reads the workload, the
namespace's credentials and their Secrets afresh, so a missed or repeated event
cannot change the outcome, and a restarted operator reaches the same decision
from what is stored (the record annotation on the workload).

- Workload events (Deployments, StatefulSets, DaemonSets with
  ``credward.io/restart-on-rotation: "true"``) keep an in-memory index of the
  credentials and Secrets each template names, and schedule a look when the
  template's references or credward's annotations changed — not on every status
  update. The index is only "who to wake": after a restart the initial listing
  rebuilds it, and each workload is looked at once (writing nothing when it is
  up to date).
- Events of credward's Secrets schedule a look at the workloads that name them.
- Looks are debounced per workload (the first trigger of a burst schedules one
  ``debounce`` later; later ones never postpone it), so Secrets written one after
  another lead to one look; rotations about to happen are waited for by the
  domain rule, not by timing.

A restart is one JSON merge patch, with the workload's ``resourceVersion`` as
precondition, that writes the record and the template digest together: it either
happens with its record or not at all, and a concurrent change makes a 409 and a
fresh look.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from credward.api import CREDENTIAL_PLURAL, GROUP, VERSION
from credward.domain import restarts as rules
from credward.domain.credential import Event
from credward.domain.injection import CredentialView, template_of
from credward.errors import Gone, Refused, TransientError
from credward.operator.kube import MERGE, Kube, edge, load_config
from credward.operator.requeue import Key, Requeue

log = logging.getLogger(__name__)

# kind -> (plural, AppsV1Api method suffix)
RESOURCES = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
REASON_REFUSED = "RestartRefused"
_SUFFIX = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Seen:
    """What a workload event showed that matters here; a look is needed only when it changes."""

    refs: rules.References
    record: str | None
    template_digest: str | None


def _seen(kind: str, body: Mapping[str, Any]) -> Seen:
    meta_notes = (body.get("metadata") or {}).get("annotations") or {}
    template = template_of(kind, body) or {}
    template_notes = (template.get("metadata") or {}).get("annotations") or {}
    return Seen(
        rules.references(kind, body),
        meta_notes.get(rules.ANNOTATION_SECRET_IDS),
        template_notes.get(rules.ANNOTATION_SECRET_DIGEST),
    )


def _key(namespace: str, kind: str, name: str) -> Key:
    return namespace, f"{kind}/{name}"


class Restarts:
    """One per operator: the index, the debounced queue, and the look at one workload."""

    def __init__(
        self,
        api: client.ApiClient,
        kube: Kube,
        *,
        debounce: timedelta,
        max_wait: timedelta,
        field_manager: str,
        backoff_max: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._serialize = api.sanitize_for_serialization
        self._kube = kube
        self._debounce = debounce.total_seconds()
        self._max_wait = max_wait
        self._field_manager = field_manager
        self._clock = clock
        self._seen: dict[str, dict[Key, Seen]] = {}  # namespace -> opted-in workloads there
        self._locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.requeue = Requeue(self._look, backoff_max=backoff_max.total_seconds())

    @staticmethod
    @asynccontextmanager
    async def connect(
        *, debounce: timedelta, max_wait: timedelta, field_manager: str, backoff_max: timedelta
    ) -> AsyncIterator[Restarts]:
        await load_config()
        async with client.ApiClient() as api:
            kube = Kube(
                client.CoreV1Api(api), client.CustomObjectsApi(api), field_manager, api.sanitize_for_serialization
            )
            restarts = Restarts(
                api, kube, debounce=debounce, max_wait=max_wait, field_manager=field_manager, backoff_max=backoff_max
            )
            try:
                yield restarts
            finally:
                restarts.requeue.close()

    # -- triggers ----------------------------------------------------------------------------------

    def workload_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = _key(str(meta.get("namespace", "")), kind, str(meta.get("name", "")))
        if event_type == "DELETED" or not rules.wants_restarts(body):
            self._forget(key)
            return
        seen = _seen(kind, body)
        known = self._seen.setdefault(key[0], {})
        if known.get(key) != seen:
            known[key] = seen
            self.requeue.sooner(key, self._debounce)

    def secret_event(self, namespace: str, secret: str, credential: str | None) -> None:
        """A credward Secret changed: look at every workload that names it or its credential."""
        for key, seen in self._seen.get(namespace, {}).items():
            if secret in seen.refs.secrets or credential in seen.refs.credentials:
                self.requeue.sooner(key, self._debounce)

    def _forget(self, key: Key) -> None:
        self._seen.get(key[0], {}).pop(key, None)
        self.requeue.forget(key)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]

    # -- one look ----------------------------------------------------------------------------------

    async def _look(self, key: Key) -> None:
        namespace, ref = key
        kind, _, name = ref.partition("/")
        async with self._locks[key]:
            try:
                delay = await self._decide_and_act(namespace, kind, name)
            except TransientError as exc:
                wait = max(exc.delay, self.requeue.backoff(key))
                log.warning("%s/%s: restart check failed (%s); retrying in %.0fs", namespace, ref, exc, wait)
                self.requeue.sooner(key, wait)
                return
            except Refused as exc:
                wait = self.requeue.backoff(key)
                log.warning(
                    "%s/%s: restart refused by the API server (%s); retrying in %.0fs", namespace, ref, exc, wait
                )
                self.requeue.sooner(key, wait)
                return
            except Gone:
                self._forget(key)
                return
            self.requeue.succeeded(key)
            if delay is not None:
                self.requeue.sooner(key, delay)

    async def _decide_and_act(self, namespace: str, kind: str, name: str) -> float | None:
        """Gather, decide, write; the delay until the next look when the decision is to wait."""
        what = f"{namespace}/{kind}/{name}"
        workload = await self._read(kind, namespace, name)
        if workload is None:
            raise Gone(f"{what}: not found")
        if not rules.wants_restarts(workload):
            self._seen.get(namespace, {}).pop(_key(namespace, kind, name), None)
            return None
        credentials = await self._credentials(namespace)
        views = {c["metadata"]["name"]: CredentialView.from_manifest(c) for c in credentials}
        used = rules.credentials_used(rules.references(kind, workload), rules.managed_secrets(list(views.values())))
        now = self._clock()
        states: dict[str, rules.CredentialState] = {}
        by_name = {c["metadata"]["name"]: c for c in credentials}
        for credential in sorted(used):
            view = views.get(credential)
            # Only the Secret's annotations are read (ids and times); its values are dropped at once.
            ids = rules.SecretIds.from_manifest(
                await self._kube.get_secret(namespace, view.secret_name) if view else None, credential
            )
            pending = rules.rotation_pending(by_name.get(credential), ids, now, self._max_wait)
            states[credential] = rules.CredentialState(credential, ids, pending)
        decision = rules.decide_restart(workload, states, now, self._max_wait)
        if decision.action == "none":
            log.debug("%s: restart check: %s", what, decision.why)
            return None
        if decision.action == "wait":
            assert decision.recheck_after is not None
            log.info("%s: restart check: %s", what, decision.why)
            return max(decision.recheck_after.total_seconds(), 1.0)
        rv = workload["metadata"]["resourceVersion"]
        patch: dict[str, Any] = {
            "metadata": {"resourceVersion": rv, "annotations": {rules.ANNOTATION_SECRET_IDS: decision.record}}
        }
        if decision.action == "restart":
            patch["spec"] = {
                "template": {"metadata": {"annotations": {rules.ANNOTATION_SECRET_DIGEST: decision.digest}}}
            }
        involved = {**workload, "apiVersion": "apps/v1", "kind": kind}
        try:
            await self._patch(kind, namespace, name, patch)
        except Refused as exc:  # e.g. an admission webhook or policy: say so on the workload, once per outage
            if self.requeue.failures(_key(namespace, kind, name)) == 0:
                message = f"Could not write {rules.ANNOTATION_SECRET_IDS} ({decision.why}): {exc}"
                await self._kube.post_event(involved, Event("Warning", REASON_REFUSED, message))
            raise
        log.info(
            "%s: restart check: %s (%s)",
            what,
            decision.why,
            "rolling restart" if decision.action == "restart" else "recorded",
        )
        if (event := decision.event) is not None:
            await self._kube.post_event(involved, Event(*event))
        return None

    # -- API calls ---------------------------------------------------------------------------------

    async def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        method = getattr(self._apps, f"read_namespaced_{_SUFFIX[kind]}")
        try:
            async with edge(f"reading {kind} {namespace}/{name}"):
                obj = await method(name, namespace)
        except Gone:
            return None
        body: dict[str, Any] = self._serialize(obj)
        return body

    async def _patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        method = getattr(self._apps, f"patch_namespaced_{_SUFFIX[kind]}")
        async with edge(f"patching {kind} {namespace}/{name}"):
            await method(name, namespace, patch, field_manager=self._field_manager, _content_type=MERGE)

    async def _credentials(self, namespace: str) -> list[dict[str, Any]]:
        async with edge(f"listing ServiceAccountCredentials in {namespace}"):
            listing: dict[str, Any] = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIAL_PLURAL
            )
        items: list[dict[str, Any]] = listing.get("items") or []
        return items

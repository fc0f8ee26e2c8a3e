"""Reconcile one ServiceAccountCredential: read, decide (pure), write what the plan says.

Level-based: every trigger (credential event, owned-Secret event, wake-up)
leads to the same ``reconcile(namespace, name)`` on freshly read objects, so
stale event bodies and restarts cannot lead to different decisions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain.credential import CredentialRef, ObservedSecret, Plan, decide
from credward.domain.timefmt import parse_rfc3339
from credward.errors import InvalidSpec, TransientError
from credward.operator.kube import Kube
from credward.operator.requeue import Key, Requeue
from credward.operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class CredentialController:
    def __init__(self, kube: Kube, settings: OperatorSettings, clock: Callable[[], datetime] = _now) -> None:
        self._kube = kube
        self._settings = settings
        self._clock = clock
        self._locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.requeue = Requeue(self._wake)

    async def _wake(self, key: Key) -> None:
        await self.reconcile(*key)

    def forget(self, namespace: str, name: str) -> None:
        self.requeue.forget((namespace, name))
        self._locks.pop((namespace, name), None)

    async def reconcile(self, namespace: str, name: str) -> None:
        """Bring one credential's Secret and status up to date; schedule the next look."""
        key = (namespace, name)
        async with self._locks[key]:
            try:
                delay = await self._reconcile(namespace, name)
            except TransientError as exc:
                log.warning("%s/%s: %s; retrying in %.0fs", namespace, name, exc, exc.delay)
                delay = exc.delay
            except InvalidSpec as exc:
                log.error("%s/%s: %s", namespace, name, exc)
                delay = None
            if delay is not None:
                self.requeue.after(key, delay)

    async def _reconcile(self, namespace: str, name: str) -> float | None:
        body = await self._kube.get_credential(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return None
        meta = body["metadata"]
        try:
            spec = CredentialSpec.model_validate(body.get("spec") or {})
            status = CredentialStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            raise InvalidSpec(f"cannot read ServiceAccountCredential {namespace}/{name}: {exc}") from None
        ref = CredentialRef(
            namespace=namespace,
            name=name,
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            created=parse_rfc3339(meta["creationTimestamp"]),
        )
        secret_name = spec.effective_secret_name(name)
        raw = await self._kube.get_secret(namespace, secret_name)
        observed = ObservedSecret.from_manifest(raw, self._settings.field_manager) if raw is not None else None
        plan = decide(
            ref, spec, status, observed, self._settings.endpoints, self._clock(), resync=self._settings.resync
        )
        await self._carry_out(body, plan)
        return plan.requeue_after.total_seconds()

    async def _carry_out(self, body: dict[str, Any], plan: Plan) -> None:
        meta = body["metadata"]
        if plan.secret is not None:
            await self._kube.apply_secret(plan.secret)
            log.info("%s/%s: applied Secret %s", meta["namespace"], meta["name"], plan.secret["metadata"]["name"])
        if plan.status is not None:
            await self._kube.apply_credential_status(meta["namespace"], meta["name"], plan.status)
        for event in plan.events:
            log.info("%s/%s: %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
            await self._kube.post_event(body, event)

"""Coalesced restarts for workloads that cannot re-read a file: pure rules, no I/O.

A Deployment, StatefulSet or DaemonSet annotated ``credward.io/restart-on-rotation: "true"``
gets one rolling restart per rotation of the credentials its pods use. Two annotations carry
the state, both on the workload, so a restarted operator decides from what is stored:

* ``credward.io/secret-ids`` on the workload's *metadata* — the record: ``name=id`` of each
  credential's client secret the pods were started with (ids, never values). Writing it never
  rolls pods, so a workload seen for the first time is recorded without a restart.
* ``credward.io/secret-digest`` on the *pod template* — a digest of that record. Changing it
  is the restart (as ``kubectl rollout restart`` changes ``restartedAt``); pods carry it.

:func:`decide_restart` compares the record with the secret ids the credentials' Secrets hold
*now* (read from the Secrets' annotations, so a restart happens only once the new secret is in
the Secret). A credential that rotated makes a restart; one that joined or left the template
only updates the record (the edit that changed the template rolled the pods already). While
another credential the pods use is about to rotate (an unhandled ``credward.io/rotate`` request,
or ``nextRotationTime`` due), the restart waits for it, at most ``max_wait`` after the first new
secret was written and never past half of its overlap: several credentials rotating together
give one restart, well inside the time the old secrets are still accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from credward.api import ANNOTATION_SECRET_ID, CREDENTIAL_KIND, GROUP
from credward.domain.credential import (
    ANNOTATION_PREVIOUS_ID,
    ANNOTATION_PREVIOUS_NOT_AFTER,
    ANNOTATION_ROTATE_HANDLED,
    ANNOTATION_SECRET_CREATED,
)
from credward.domain.injection import (
    ANNOTATION_CREDENTIAL,
    AUTO,
    AUTO_KINDS,
    CredentialView,
    auto_credential_name,
    template_of,
    wants_injection,
)
from credward.domain.rotation import ANNOTATION_ROTATE
from credward.domain.timefmt import parse_rfc3339

ANNOTATION_RESTART_ON_ROTATION = f"{GROUP}/restart-on-rotation"
ANNOTATION_SECRET_IDS = f"{GROUP}/secret-ids"  # workload metadata: the record
ANNOTATION_SECRET_DIGEST = f"{GROUP}/secret-digest"  # pod template: changing it rolls the pods
RESTART_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

REASON_ROLLED = "RolledOnRotation"
REASON_ROLLED_LATE = "RolledAfterOverlap"

Action = Literal["none", "record", "restart", "wait"]


def wants_restarts(workload: Mapping[str, Any]) -> bool:
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_RESTART_ON_ROTATION) == "true"


@dataclass(frozen=True, slots=True)
class References:
    """What a pod template names: credentials (by the injection annotation) and Secrets (by name)."""

    credentials: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()


def references(kind: str, workload: Mapping[str, Any]) -> References:
    """Every credential and Secret the workload's pods read, before knowing which Secrets are credward's.

    The injection annotation counts as the webhook reads it (label ``credward.io/inject: "true"``;
    ``auto`` is the credential made for the workload). Secrets count in every form a pod can read:
    Secret and projected volumes, env ``secretKeyRef`` and ``envFrom`` (those last two never see a
    rotated file, which is exactly why such a workload needs a restart).
    """
    template = template_of(kind, workload) or {}
    meta = template.get("metadata") or {}
    credentials: set[str] = set()
    named = ((meta.get("annotations") or {}).get(ANNOTATION_CREDENTIAL) or "").strip()
    if named and wants_injection(meta.get("labels")):
        if named != AUTO:
            credentials.add(named)
        elif kind in AUTO_KINDS:
            credentials.add(auto_credential_name(kind, str((workload.get("metadata") or {}).get("name", ""))))
    spec: Mapping[str, Any] = template.get("spec") or {}
    secrets: set[str] = set()
    for volume in spec.get("volumes") or ():
        if name := (volume.get("secret") or {}).get("secretName"):
            secrets.add(str(name))
        for source in (volume.get("projected") or {}).get("sources") or ():
            if name := (source.get("secret") or {}).get("name"):
                secrets.add(str(name))
    for container_kind in ("initContainers", "containers"):
        for container in spec.get(container_kind) or ():
            for env in container.get("env") or ():
                if name := ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"):
                    secrets.add(str(name))
            for source in container.get("envFrom") or ():
                if name := (source.get("secretRef") or {}).get("name"):
                    secrets.add(str(name))
    return References(frozenset(credentials), frozenset(secrets))


def credentials_used(refs: References, managed: Mapping[str, str]) -> frozenset[str]:
    """The credentials whose secrets the pods hold; ``managed`` maps each credential's Secret name to it."""
    return refs.credentials | {managed[s] for s in refs.secrets if s in managed}


def managed_secrets(credentials: list[CredentialView]) -> dict[str, str]:
    return {c.secret_name: c.name for c in credentials}


@dataclass(frozen=True, slots=True)
class SecretIds:
    """What a credential's Secret holds, by id (from its annotations; never a value)."""

    current: str
    created_at: datetime | None = None
    previous: str | None = None
    previous_not_after: datetime | None = None
    rotate_handled: str | None = None

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any] | None, credential: str) -> SecretIds | None:
        """None unless the Secret is controlled by ``credential`` and names its current secret."""
        if not obj:
            return None
        meta = obj.get("metadata") or {}
        owned = any(
            o.get("controller") and o.get("kind") == CREDENTIAL_KIND and o.get("name") == credential
            for o in meta.get("ownerReferences") or ()
        )
        notes: Mapping[str, str] = meta.get("annotations") or {}
        current = notes.get(ANNOTATION_SECRET_ID)
        if not owned or not current:
            return None
        return cls(
            current=current,
            created_at=_time(notes.get(ANNOTATION_SECRET_CREATED)),
            previous=notes.get(ANNOTATION_PREVIOUS_ID) or None,
            previous_not_after=_time(notes.get(ANNOTATION_PREVIOUS_NOT_AFTER)),
            rotate_handled=notes.get(ANNOTATION_ROTATE_HANDLED),
        )

    def accepts_previous(self, secret_id: str, now: datetime) -> bool:
        """``secret_id`` is the replaced secret and its overlap is still open."""
        return self.previous == secret_id and self.previous_not_after is not None and now < self.previous_not_after


def _time(text: str | None) -> datetime | None:
    try:
        return parse_rfc3339(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class CredentialState:
    """One credential the pods use: what its Secret holds (None: no Secret yet) and whether it is about to rotate."""

    name: str
    secret: SecretIds | None
    rotation_pending: bool = False


def rotation_pending(
    credential: Mapping[str, Any] | None, secret: SecretIds | None, now: datetime, lookahead: timedelta
) -> bool:
    """The operator is about to rotate this credential: a ``credward.io/rotate`` value not carried out yet,
    or ``nextRotationTime`` within ``lookahead``. Never while an overlap is open (no rotation starts then),
    nor for a revoked or expired credential (those never rotate)."""
    if credential is None or secret is None:
        return False
    view = CredentialView.from_manifest(credential)
    if view.revoked or view.is_expired(now):
        return False
    if secret.previous_not_after is not None and now < secret.previous_not_after:
        return False
    request = ((credential.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ROTATE)
    if request is not None and request != secret.rotate_handled:
        return True
    next_at = _time((credential.get("status") or {}).get("nextRotationTime"))
    return next_at is not None and next_at <= now + lookahead


# -- the record and its digest ---------------------------------------------------------------------


def format_record(ids: Mapping[str, str]) -> str:
    """``api=0f3a9c1b,db=77c1aa02``: credential names cannot hold ``,`` or ``=``, so this parses back."""
    return ",".join(f"{name}={ids[name]}" for name in sorted(ids))


def parse_record(text: str | None) -> dict[str, str] | None:
    """The record, or None when absent or not one credward wrote (then the workload counts as new)."""
    if text is None:
        return None
    ids: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        name, sep, secret_id = part.partition("=")
        if not sep or not name or not secret_id:
            return None
        ids[name] = secret_id
    return ids


def digest(ids: Mapping[str, str]) -> str:
    """The pod-template annotation's value: changes exactly when some credential's secret id does."""
    return hashlib.sha256(format_record(ids).encode()).hexdigest()[:16]


def recorded(workload: Mapping[str, Any]) -> dict[str, str] | None:
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return parse_record(annotations.get(ANNOTATION_SECRET_IDS))


# -- the decision ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartDecision:
    action: Action
    why: str  # for the log
    record: str = ""  # the ANNOTATION_SECRET_IDS value to write (record, restart)
    rotated: tuple[str, ...] = ()  # credentials whose secret changed since the pods started
    late: tuple[str, ...] = ()  # of those, the ones whose old secret is no longer accepted
    recheck_after: timedelta | None = None  # wait: when to look again

    @property
    def digest(self) -> str:
        return digest(parse_record(self.record) or {})

    @property
    def event(self) -> tuple[Literal["Normal", "Warning"], str, str] | None:
        """(type, reason, message) for the workload, naming credentials and ids, never values."""
        if self.action != "restart":
            return None
        names = ", ".join(self.rotated)
        message = f"Rolling restart: credentials {names} rotated; pods start with secret ids {self.record}"
        if self.late:
            late = ", ".join(self.late)
            return (
                "Warning",
                REASON_ROLLED_LATE,
                f"{message}. The secrets of {late} that running pods hold are no longer accepted "
                "(the overlap ended before this restart)",
            )
        return "Normal", REASON_ROLLED, f"{message}; the old secrets are accepted until the new pods run"


def decide_restart(
    workload: Mapping[str, Any],
    states: Mapping[str, CredentialState],
    now: datetime,
    max_wait: timedelta,
) -> RestartDecision:
    """Whether to restart, only record, wait for a rotation about to happen, or do nothing.

    ``states`` holds every credential the pod template uses (:func:`credentials_used`).
    A credential whose Secret is missing for now keeps its recorded id: unknown is not rotated.
    """
    if not wants_restarts(workload):
        return RestartDecision("none", "not annotated " + ANNOTATION_RESTART_ON_ROTATION)
    before = recorded(workload)
    now_ids = {name: s.secret.current for name, s in states.items() if s.secret is not None}
    for name in states:
        if name not in now_ids and before and name in before:
            now_ids[name] = before[name]
    record = format_record(now_ids)
    if before is None:
        return RestartDecision("record", "seen for the first time: recorded without a restart", record)
    if now_ids == before:
        return RestartDecision("none", "up to date")
    rotated = tuple(sorted(n for n in now_ids if n in before and now_ids[n] != before[n]))
    if not rotated:
        return RestartDecision("record", "the credentials in the template changed: recorded without a restart", record)
    pending = sorted(n for n, s in states.items() if s.rotation_pending)
    if pending:
        deadline = min(_hold_until(states[n].secret, now, max_wait) for n in rotated)
        if now < deadline:
            return RestartDecision(
                "wait",
                f"{', '.join(rotated)} rotated; waiting for {', '.join(pending)} to rotate too (one restart)",
                record,
                rotated,
                recheck_after=deadline - now,
            )
    late = tuple(
        n for n in rotated if (secret := states[n].secret) is None or not secret.accepts_previous(before[n], now)
    )
    return RestartDecision("restart", f"{', '.join(rotated)} rotated", record, rotated, late)


def _hold_until(secret: SecretIds | None, now: datetime, max_wait: timedelta) -> datetime:
    """How long a restart may wait for other rotations: ``max_wait`` after the new secret, at most half its overlap."""
    if secret is None or secret.created_at is None:
        return now
    until = secret.created_at + max_wait
    if secret.previous_not_after is not None:
        until = min(until, secret.created_at + (secret.previous_not_after - secret.created_at) / 2)
    return until

"""What a ServiceAccountCredential needs right now: a pure decision from what is stored.

``decide`` reads the credential (spec + status), the Secret as it stands (or
its absence) and the clock, and returns a :class:`Plan`: the Secret to apply
(or none), the status to write (or none), the events worth telling people
about, and when to look again. It performs no I/O, so every branch is a unit
test; the kopf handler only carries the plan out.

Lasting state lives in the credential's status and in the Secret's
annotations, never in memory, so a restarted operator reaches the same
decision — and, when everything is up to date, a plan with no writes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from credward.api import (
    ANNOTATION_CLIENT_ID,
    ANNOTATION_SECRET_ID,
    API_VERSION,
    CREDENTIAL_KIND,
    GROUP,
    KEY_CLIENT_ID,
    KEY_CLIENT_SECRET,
    KEY_ISSUER,
    KEY_TOKEN_URL,
    LABEL_CREDENTIAL,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from credward.api.models import ActiveSecret, CredentialSpec, CredentialStatus
from credward.domain import secrets as secretgen
from credward.domain.conditions import ConditionSpec, find, merge_conditions
from credward.domain.health import kstatus_conditions
from credward.domain.timefmt import parse_rfc3339, to_rfc3339, truncate

ANNOTATION_SECRET_CREATED = f"{GROUP}/secret-created-at"
ANNOTATION_SECRET_FINGERPRINT = f"{GROUP}/secret-fingerprint"

READY = "Ready"
EXPIRED = "Expired"
REVOKED = "Revoked"

# Reasons (CamelCase, as Kubernetes conventions ask).
REASON_SECRET_READY = "SecretReady"
REASON_SECRET_CONFLICT = "SecretConflict"
REASON_EXPIRED = "Expired"
REASON_REVOKED = "Revoked"
REASON_NOT_EXPIRED = "WithinLifetime"
REASON_NO_LIFETIME = "NoLifetime"
REASON_NOT_REVOKED = "NotRevoked"

DEFAULT_RESYNC = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class CredentialRef:
    """Identity of the credential being reconciled."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: datetime


@dataclass(frozen=True, slots=True)
class ObservedSecret:
    """The Secret as it stands in the API server (values decoded, kept in memory only)."""

    name: str
    controller_uids: tuple[str, ...]
    data: Mapping[str, str]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    # Label/annotation keys that credward's field manager applied before (from managedFields),
    # so that keys dropped from spec.secretTemplate are noticed and removed.
    managed_labels: frozenset[str] = frozenset()
    managed_annotations: frozenset[str] = frozenset()

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any], field_manager: str) -> ObservedSecret:
        meta = obj.get("metadata") or {}
        raw = obj.get("data") or {}
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}
        owners = tuple(
            str(o.get("uid")) for o in meta.get("ownerReferences") or () if o.get("controller") and o.get("uid")
        )
        labels, annotations = _managed_keys(meta.get("managedFields") or (), field_manager)
        return cls(
            name=str(meta.get("name", "")),
            controller_uids=owners,
            data=data,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            managed_labels=labels,
            managed_annotations=annotations,
        )


def _managed_keys(managed_fields: Any, manager: str) -> tuple[frozenset[str], frozenset[str]]:
    labels: set[str] = set()
    annotations: set[str] = set()
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        meta = (entry.get("fieldsV1") or {}).get("f:metadata") or {}
        labels |= {k.removeprefix("f:") for k in meta.get("f:labels") or {}}
        annotations |= {k.removeprefix("f:") for k in meta.get("f:annotations") or {}}
    return frozenset(labels), frozenset(annotations)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where workloads get tokens; written into every Secret."""

    issuer: str
    token_url: str

    @property
    def issuer_host(self) -> str:
        return urlsplit(self.issuer).hostname or self.issuer


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now. ``secret`` carries the client secret in memory only; never log it."""

    secret: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    events: tuple[Event, ...] = ()
    requeue_after: timedelta = DEFAULT_RESYNC

    @property
    def writes(self) -> int:
        return int(self.secret is not None) + int(self.status is not None)


@dataclass(frozen=True, slots=True)
class Generators:
    """Sources of randomness, injected so tests are deterministic."""

    client_id: Callable[[], str] = secretgen.new_client_id
    client_secret: Callable[[], str] = secretgen.new_client_secret
    secret_id: Callable[[], str] = secretgen.new_secret_id


def identity_of(client_id: str, endpoints: Endpoints) -> str:
    """``<client id>@clients.<issuer host>``, the account's ``sub``."""
    return f"{client_id}@clients.{endpoints.issuer_host}"


def decide(
    ref: CredentialRef,
    spec: CredentialSpec,
    status: CredentialStatus,
    secret: ObservedSecret | None,
    endpoints: Endpoints,
    now: datetime,
    *,
    gen: Generators | None = None,
    resync: timedelta = DEFAULT_RESYNC,
) -> Plan:
    """Decide the Secret and status a credential should have now."""
    gen = gen or Generators()
    now = truncate(now)
    secret_name = spec.effective_secret_name(ref.name)
    events: list[Event] = []

    if secret is not None and ref.uid not in secret.controller_uids:
        return _conflict(ref, status, secret_name, now, resync)

    ours = secret
    client_id = status.client_id or (ours.annotations.get(ANNOTATION_CLIENT_ID) if ours else None) or gen.client_id()

    value, secret_record, why_new = _current_secret(ours, status)
    if value is None:
        value = gen.client_secret()
        secret_record = ActiveSecret(id=gen.secret_id(), created_at=now)
        events.append(_secret_event(why_new, secret_name, client_id))
    assert secret_record is not None

    desired = secret_manifest(ref, spec, secret_name, client_id, value, secret_record, endpoints)
    apply_secret = desired if ours is None or _drifted(ours, desired) else None
    if apply_secret is not None and ours is not None and why_new is None:
        events.append(
            Event("Normal", "SecretRepaired", f"Restored keys, labels or annotations of Secret {secret_name}")
        )

    expires_at = ref.created + spec.lifetime_td if spec.lifetime_td else None
    expires_at = truncate(expires_at) if expires_at else None
    expired = expires_at is not None and now >= expires_at
    wanted = _conditions(spec, secret_name, expires_at, expired)
    _transition_events(status, wanted, events)

    next_rotation = secret_record.created_at + spec.rotation.period_td
    new_status = CredentialStatus(
        client_id=client_id,
        identity=identity_of(client_id, endpoints),
        secret_name=secret_name,
        active_secrets=(secret_record,),
        last_rotation_time=secret_record.created_at,
        next_rotation_time=next_rotation,
        expires_at=expires_at,
        observed_generation=ref.generation,
        conditions=merge_conditions(status.conditions, wanted, now, ref.generation),
    )
    status_doc = status_document(new_status)
    write_status = status_doc if status_doc != status_document(status) else None

    wake = [resync]
    if expires_at is not None and not expired:
        wake.append(expires_at - now)
    return Plan(
        secret=apply_secret,
        status=write_status,
        events=tuple(events),
        requeue_after=max(min(wake), timedelta(seconds=1)),
    )


def _current_secret(
    ours: ObservedSecret | None, status: CredentialStatus
) -> tuple[str | None, ActiveSecret | None, str | None]:
    """The client secret to keep and its record, or (None, None, why a new one is needed)."""
    if ours is None:
        return None, None, "created" if status.client_id is None else "deleted"
    value = ours.data.get(KEY_CLIENT_SECRET)
    if not value:
        return None, None, "missing"
    if ours.annotations.get(ANNOTATION_SECRET_FINGERPRINT) != secretgen.fingerprint(value):
        return None, None, "tampered"
    secret_id = ours.annotations.get(ANNOTATION_SECRET_ID)
    known = {s.id: s for s in status.active_secrets}
    if secret_id in known:
        return value, known[secret_id], None
    created = ours.annotations.get(ANNOTATION_SECRET_CREATED)
    if secret_id and created:
        # Status was lost (e.g. restored from a backup without status): rebuild it from the Secret.
        return value, ActiveSecret(id=secret_id, created_at=parse_rfc3339(created)), None
    return None, None, "tampered"


_NEW_SECRET_EVENTS: dict[str | None, tuple[Literal["Normal", "Warning"], str, str]] = {
    "created": ("Normal", "SecretCreated", "Created Secret {name} for client id {cid}"),
    "deleted": ("Warning", "SecretRecreated", "Secret {name} was deleted; created it again with a new client secret"),
    "missing": ("Warning", "SecretRecreated", "Secret {name} had no client-secret; generated a new one"),
    "tampered": ("Warning", "SecretTampered", "client-secret in Secret {name} was changed; generated a new one"),
}


def _secret_event(why: str | None, name: str, client_id: str) -> Event:
    type_, reason, template = _NEW_SECRET_EVENTS[why]
    return Event(type_, reason, template.format(name=name, cid=client_id))


def _conditions(
    spec: CredentialSpec, secret_name: str, expires_at: datetime | None, expired: bool
) -> list[ConditionSpec]:
    if spec.revoked:
        ready = ConditionSpec(READY, "False", REASON_REVOKED, "The account is revoked (spec.revoked is true)")
    elif expires_at is not None and expired:
        ready = ConditionSpec(
            READY, "False", REASON_EXPIRED, f"The account's lifetime ended at {to_rfc3339(expires_at)}"
        )
    else:
        ready = ConditionSpec(READY, "True", REASON_SECRET_READY, f"Secret {secret_name} holds the client credentials")
    if expires_at is None:
        exp = ConditionSpec(EXPIRED, "False", REASON_NO_LIFETIME, "spec.lifetime is not set")
    elif expired:
        exp = ConditionSpec(EXPIRED, "True", REASON_EXPIRED, f"Lifetime ended at {to_rfc3339(expires_at)}")
    else:
        exp = ConditionSpec(EXPIRED, "False", REASON_NOT_EXPIRED, f"Valid until {to_rfc3339(expires_at)}")
    rev = (
        ConditionSpec(REVOKED, "True", REASON_REVOKED, "spec.revoked is true")
        if spec.revoked
        else ConditionSpec(REVOKED, "False", REASON_NOT_REVOKED, "")
    )
    return kstatus_conditions([ready, exp, rev])


def _transition_events(status: CredentialStatus, wanted: list[ConditionSpec], events: list[Event]) -> None:
    """Tell people when the account becomes expired or revoked (once, on the transition)."""
    for spec in wanted:
        if spec.type in (EXPIRED, REVOKED) and spec.status == "True":
            old = find(status.conditions, spec.type)
            if old is None or old.status != "True":
                events.append(Event("Warning", spec.reason, spec.message))


def _conflict(ref: CredentialRef, status: CredentialStatus, secret_name: str, now: datetime, resync: timedelta) -> Plan:
    message = (
        f"Secret {secret_name} already exists and is not owned by this ServiceAccountCredential; "
        "credward never overwrites it. Delete or rename that Secret, or set spec.secretName to another name"
    )
    wanted = kstatus_conditions([ConditionSpec(READY, "False", REASON_SECRET_CONFLICT, message)])
    others = [c for c in status.conditions if c.type not in {w.type for w in wanted}]
    conditions = merge_conditions(status.conditions, wanted, now, ref.generation) + tuple(others)
    new_status = status.model_copy(update={"conditions": conditions, "observed_generation": ref.generation})
    doc = status_document(new_status)
    old = find(status.conditions, READY)
    events: tuple[Event, ...] = ()
    if old is None or old.reason != REASON_SECRET_CONFLICT:
        events = (Event("Warning", REASON_SECRET_CONFLICT, message),)
    return Plan(
        status=doc if doc != status_document(status) else None,
        events=events,
        requeue_after=resync,
    )


def secret_manifest(
    ref: CredentialRef,
    spec: CredentialSpec,
    name: str,
    client_id: str,
    value: str,
    record: ActiveSecret,
    endpoints: Endpoints,
) -> dict[str, Any]:
    """The full Secret credward applies (server-side apply, so removed template keys go away)."""
    labels = {**spec.secret_template.labels, LABEL_MANAGED_BY: MANAGED_BY, LABEL_CREDENTIAL: ref.name}
    annotations = {
        **spec.secret_template.annotations,
        ANNOTATION_CLIENT_ID: client_id,
        ANNOTATION_SECRET_ID: record.id,
        ANNOTATION_SECRET_CREATED: to_rfc3339(record.created_at),
        ANNOTATION_SECRET_FINGERPRINT: secretgen.fingerprint(value),
    }
    data = {
        KEY_CLIENT_ID: client_id,
        KEY_CLIENT_SECRET: value,
        KEY_TOKEN_URL: endpoints.token_url,
        KEY_ISSUER: endpoints.issuer,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": ref.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": CREDENTIAL_KIND,
                    "name": ref.name,
                    "uid": ref.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _drifted(observed: ObservedSecret, desired: Mapping[str, Any]) -> bool:
    """True if the Secret differs from what credward wants in anything credward manages."""
    meta = desired["metadata"]
    want_data = {k: base64.b64decode(v).decode() for k, v in desired["data"].items()}
    if dict(observed.data) != want_data:
        return True
    for have, want, managed in (
        (observed.labels, meta["labels"], observed.managed_labels),
        (observed.annotations, meta["annotations"], observed.managed_annotations),
    ):
        if any(have.get(k) != v for k, v in want.items()):
            return True
        if managed - set(want):
            return True
    return False


def status_document(status: CredentialStatus) -> dict[str, Any]:
    """The status as the CRD stores it (camelCase, RFC 3339 times, unset fields omitted)."""
    doc: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in doc.items() if v != []}

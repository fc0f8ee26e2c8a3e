"""What a ServiceAccountCredential needs right now: a pure decision from what is stored and held.

The controller gathers one :class:`CredentialInput` — the credential (spec +
status), its Secret as it stands (or its absence), the RoleBindings that name
it, and what the security service holds for it (or why that is unknown) — and
``decide`` answers with a :class:`Plan`: the account to push, the role
mappings to push, the Secret to apply, the status to write, the binding
statuses, the events worth telling people about, and when to look again. It
performs no I/O, so every branch is a unit test.

A plan states what things look like *if its writes succeed*. When one fails,
the controller adds the failure to the input and decides again (see
``CredentialInput.mappings_failure`` and ``secret_refusal``): the second plan
writes no more to the service and says why in the conditions.

The order is part of the decision: a new client secret goes to the service
(as its HMAC hash) before it is written into the Secret, so no workload ever
mounts a secret the service would refuse. A new value that cannot be
registered is not written at all; the next reconcile generates another.

Lasting state lives in the credential's status and in the Secret's
annotations, never in memory, so a restarted operator reaches the same
decision — and, when everything is up to date, a plan with no Kubernetes
writes. The one remembered fact, ``ServiceHolds.confirmed``, only saves
pushes: without it (after a restart) each account is pushed once more.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    KEY_PREVIOUS_CLIENT_SECRET,
    KEY_TOKEN_URL,
    LABEL_CREDENTIAL,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from credward.api.admin import AccountIn, AccountView, RoleMappingsIn, SecretHash, ServiceInfo
from credward.api.models import ActiveSecret, CredentialSpec, CredentialStatus
from credward.domain import rolebinding, rotation
from credward.domain import secrets as secretgen
from credward.domain.conditions import ConditionSpec, find, merge_conditions
from credward.domain.health import kstatus_conditions
from credward.domain.rolebinding import BindingUpdate, ObservedBinding, SyncOutcome
from credward.domain.rotation import Overlap
from credward.domain.timefmt import parse_rfc3339, to_rfc3339, truncate

ANNOTATION_SECRET_CREATED = f"{GROUP}/secret-created-at"
ANNOTATION_SECRET_FINGERPRINT = f"{GROUP}/secret-fingerprint"
# The credward.io/rotate value carried out by the rotation that wrote the current secret.
ANNOTATION_ROTATE_HANDLED = f"{GROUP}/rotate-handled"
# The secret a rotation replaced, while its grace period lasts (its value is under KEY_PREVIOUS_CLIENT_SECRET).
ANNOTATION_PREVIOUS_ID = f"{GROUP}/previous-secret-id"
ANNOTATION_PREVIOUS_CREATED = f"{GROUP}/previous-secret-created-at"
ANNOTATION_PREVIOUS_NOT_AFTER = f"{GROUP}/previous-secret-not-after"
ANNOTATION_PREVIOUS_FINGERPRINT = f"{GROUP}/previous-secret-fingerprint"
# Set to "true" on a credential to delete it without removing its account from the security service.
ANNOTATION_SKIP_CLEANUP = f"{GROUP}/skip-account-cleanup"
FINALIZER = f"{GROUP}/account-cleanup"

READY = "Ready"
REGISTERED = "Registered"
EXPIRED = "Expired"
EXPIRING_SOON = "ExpiringSoon"
REVOKED = "Revoked"
ROTATING = "Rotating"

# Reasons (CamelCase, as Kubernetes conventions ask).
REASON_SECRET_READY = "SecretReady"
REASON_SECRET_CONFLICT = "SecretConflict"
REASON_SECRET_REFUSED = "SecretRefused"
REASON_EXPIRED = "Expired"
REASON_REVOKED = "Revoked"
REASON_NOT_EXPIRED = "WithinLifetime"
REASON_NO_LIFETIME = "NoLifetime"
REASON_NOT_REVOKED = "NotRevoked"
REASON_REGISTERED = "Registered"
REASON_SERVICE_UNREACHABLE = "ServiceUnreachable"
REASON_REFUSED = "Refused"
REASON_PENDING = "Pending"
REASON_HASH_KEY_MISMATCH = "HashKeyMismatch"
REASON_TOKEN_TTL_CAPPED = "TokenTTLCapped"
REASON_GRACE_PERIOD = "GracePeriod"
REASON_ONE_SECRET = "OneSecret"
REASON_SECRET_ROTATED = "SecretRotated"
REASON_OLD_SECRET_RETIRED = "OldSecretRetired"
REASON_STILL_IN_USE = "SecretStillInUse"
REASON_EXPIRING_SOON = "ExpiringSoon"
REASON_NOT_EXPIRING_SOON = "NotExpiringSoon"

# status.activeSecrets[].lastUsedAt moves only in steps this long, so a busy account does not rewrite its status
# on every look (the admin API has the exact time).
USAGE_STATUS_STEP = timedelta(minutes=1)

DEFAULT_RESYNC = timedelta(minutes=10)
DEFAULT_CONFLICT_RECHECK = timedelta(seconds=5)


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
class Candidate:
    """A fresh client id and secret, generated before deciding and used only if the decision needs them.

    Generated once per reconcile, so a second decision (after a failed write) names the same values.
    """

    client_id: str
    secret: str
    secret_id: str

    @classmethod
    def generate(cls) -> Candidate:
        return cls(secretgen.new_client_id(), secretgen.new_client_secret(), secretgen.new_secret_id())


@dataclass(frozen=True, slots=True)
class ServiceHolds:
    """The security service answered: its store (``info``) and the account it holds, or None.

    ``confirmed`` is the :func:`push_fingerprint` of the last account this operator process pushed
    and saw accepted; it catches what the view cannot show (the hashes) after a hash-key change.
    """

    info: ServiceInfo
    account: AccountView | None
    confirmed: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceUnreachable:
    """The security service did not answer (or answered 5xx); ``message`` says how."""

    message: str


@dataclass(frozen=True, slots=True)
class ServiceRefusal:
    """The admin API refused the account (4xx); ``message`` is the service's own words."""

    message: str


ServiceState = ServiceHolds | ServiceUnreachable | ServiceRefusal


@dataclass(frozen=True, slots=True)
class CredentialInput:
    """Everything one decision reads, gathered by the controller."""

    ref: CredentialRef
    spec: CredentialSpec
    status: CredentialStatus
    secret: ObservedSecret | None
    bindings: tuple[ObservedBinding, ...]
    service: ServiceState
    hash_key: bytes  # in memory only: hashes the secret value for the service
    candidate: Candidate
    endpoints: Endpoints
    has_finalizer: bool = True
    rotate_request: str | None = None  # the credential's credward.io/rotate annotation
    rotate_now: str | None = None  # its credward.io/rotate-now annotation (emergency rotation)
    # Set by the controller when a write of the first plan failed; the second decision reports it.
    mappings_failure: SyncOutcome | None = None
    secret_refusal: str | None = None

    def failed(self, **failure: Any) -> CredentialInput:
        return replace(self, **failure)


Step = Literal["create", "rotate", "retire"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the operator's metrics report of a credential after a decision (ids and times, never values).

    ``in_use_past_grace``: distinct callers still using a previous secret past its grace period (0: none);
    ``rotated``: why this plan rotates the secret, if it does.
    """

    next_rotation: datetime | None = None
    expires_at: datetime | None = None
    expiring_soon: bool = False
    in_use_past_grace: int = 0
    rotated: rotation.RotationReason | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now, in this order. ``secret`` and ``account`` are in memory only; never log them.

    ``retry`` asks for a wake-up with capped exponential backoff instead of ``requeue_after``.

    A rotation has a second push, ``deadline``, made only once ``secret`` is written: ``account`` registers
    the new secret beside the old one *without* the old one's ``notAfter``, so a crash before the Secret
    holds the new value can never leave the old value past a deadline (see :func:`rotation_accounts`).
    ``step`` names the kind of change (``create``, ``rotate``, ``retire``) for logs and fault points.
    """

    client_id: str | None = None
    add_finalizer: bool = False
    revoke: bool = False
    account: AccountIn | None = None
    confirm: str | None = None  # remember this fingerprint once the last of ``account``/``deadline`` is accepted
    deadline: AccountIn | None = None
    step: Step | None = None
    mappings: RoleMappingsIn | None = None
    secret: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    bindings: tuple[BindingUpdate, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: timedelta = DEFAULT_RESYNC
    retry: bool = False
    facts: Facts = Facts()

    @property
    def writes(self) -> int:
        """Kubernetes writes (the service's pushes are not counted)."""
        return (
            int(self.add_finalizer) + int(self.secret is not None) + int(self.status is not None) + len(self.bindings)
        )


def identity_of(client_id: str, endpoints: Endpoints) -> str:
    """``<client id>@clients.<issuer host>``, the account's ``sub``."""
    return f"{client_id}@clients.{endpoints.issuer_host}"


@dataclass(frozen=True, slots=True)
class Held:
    """The secrets a Secret holds (values in memory only): the current one and, during an overlap, the previous.

    ``handled`` is the ``credward.io/rotate`` value carried out when the current secret was written.
    """

    value: str
    record: ActiveSecret
    previous: tuple[str, ActiveSecret] | None = None
    handled: str | None = None

    @property
    def overlap(self) -> Overlap | None:
        if self.previous is None or self.previous[1].not_after is None:
            return None
        return Overlap(self.previous[1].id, self.previous[1].not_after)

    @property
    def records(self) -> tuple[ActiveSecret, ...]:
        """Newest first, as status.activeSecrets lists them."""
        return (self.record,) if self.previous is None else (self.record, self.previous[1])


def account_in(inp: CredentialInput, client_id: str, held: Held, expires_at: datetime | None) -> AccountIn:
    """The account as the service should hold it: each live secret's HMAC hash, id and times, never a value."""
    spec, ref = inp.spec, inp.ref
    pairs = [(held.value, held.record)] + ([held.previous] if held.previous is not None else [])
    return AccountIn(
        identity=identity_of(client_id, inp.endpoints),
        display_name=spec.display_name,
        namespace=ref.namespace,
        name=ref.name,
        status="revoked" if spec.revoked else "active",
        expires_at=expires_at,
        audiences=spec.audiences,
        token_ttl_seconds=int(spec.token_ttl_td.total_seconds()),
        groups=spec.groups,
        secrets=tuple(
            SecretHash(
                id=record.id,
                hash=secretgen.hash_secret(inp.hash_key, value),
                created_at=record.created_at,
                not_after=record.not_after,
            )
            for value, record in pairs
        ),
    )


def rotation_accounts(want: AccountIn) -> tuple[AccountIn, AccountIn]:
    """A rotation's two pushes: before the Secret is written, its secrets with no ``notAfter``; after, ``want``.

    The old secret's deadline reaches the service only once the Secret holds the new value, so however long
    an operator that died in between stays down, the Secret's ``client-secret`` is accepted. The candidate is
    registered without a deadline too: a candidate whose Secret write never happened exists only in the dead
    process's memory, and the next push (a fresh candidate, or the retirement) drops it from the account.
    """
    return want.model_copy(
        update={"secrets": tuple(s.model_copy(update={"not_after": None}) for s in want.secrets)}
    ), want


def push_fingerprint(account: AccountIn, info: ServiceInfo) -> str:
    """Names "this exact account, pushed to this store under this hash key" (hashes included; in memory only)."""
    text = f"{info.store_id}\n{info.hash_key_id}\n{account.model_dump_json(by_alias=True)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _account_differs(view: AccountView, want: AccountIn) -> bool:
    """Anything the view shows that differs from what credward wants (the hashes are not shown)."""
    return (
        view.identity != want.identity
        or view.display_name != want.display_name
        or view.namespace != want.namespace
        or view.name != want.name
        or view.status != want.status
        or view.expires_at != want.expires_at
        or tuple(view.audiences) != tuple(want.audiences)
        or view.token_ttl_seconds != want.token_ttl_seconds
        or tuple(view.groups) != tuple(want.groups)
        or sorted((s.id, s.not_after) for s in view.secrets) != sorted((s.id, s.not_after) for s in want.secrets)
    )


@dataclass(frozen=True, slots=True)
class _Registration:
    condition: ConditionSpec
    registers: bool = False  # the service is reachable, shares our key, and will hold the account
    push: bool = False
    revoke: bool = False
    fingerprint: str | None = None
    ttl_capped: bool = False
    retry: bool = False


def _registration(inp: CredentialInput, want: AccountIn, client_id: str, secret_id: str) -> _Registration:
    state = inp.service
    if isinstance(state, ServiceUnreachable):
        message = f"The security service is unreachable; retrying with backoff: {state.message}"
        return _Registration(ConditionSpec(REGISTERED, "False", REASON_SERVICE_UNREACHABLE, message), retry=True)
    if isinstance(state, ServiceRefusal):
        message = f"The security service refused the account: {state.message}"
        return _Registration(ConditionSpec(REGISTERED, "False", REASON_REFUSED, message), retry=True)
    ours = secretgen.hash_key_id(inp.hash_key)
    if state.info.hash_key_id != ours:
        message = (
            f"The security service hashes secrets under key {state.info.hash_key_id}, the operator under {ours}: "
            "mount the same hash-key Secret into both (and restart the one that changed)"
        )
        return _Registration(ConditionSpec(REGISTERED, "False", REASON_HASH_KEY_MISMATCH, message), retry=True)
    view = state.account
    fingerprint = push_fingerprint(want, state.info)
    push = view is None or _account_differs(view, want) or state.confirmed != fingerprint
    revoke = want.status == "revoked" and view is not None and view.status != "revoked"
    effective = (
        view.effective_token_ttl_seconds
        if view is not None and not push
        else min(want.token_ttl_seconds, state.info.max_token_ttl_seconds)
    )
    message = f"The security service holds client {client_id} with secret {secret_id}"
    capped = effective < want.token_ttl_seconds
    if capped:
        message += (
            f"; its tokens live {effective}s, not the {want.token_ttl_seconds}s of spec.tokenTTL "
            "(capped by the service's maximum token lifetime)"
        )
    return _Registration(
        ConditionSpec(REGISTERED, "True", REASON_REGISTERED, message),
        registers=True,
        push=push,
        revoke=revoke,
        fingerprint=fingerprint,
        ttl_capped=capped,
    )


def decide(
    inp: CredentialInput,
    now: datetime,
    *,
    resync: timedelta = DEFAULT_RESYNC,
    conflict_recheck: timedelta = DEFAULT_CONFLICT_RECHECK,
) -> Plan:
    """Decide the account, mappings, Secret, status and binding statuses a credential should have now."""
    now = truncate(now)
    ref, spec, status = inp.ref, inp.spec, inp.status
    secret_name = spec.effective_secret_name(ref.name)

    if inp.secret is not None and ref.uid not in inp.secret.controller_uids:
        return _conflict(inp, secret_name, now, conflict_recheck)

    ours = inp.secret
    client_id = (
        status.client_id or (ours.annotations.get(ANNOTATION_CLIENT_ID) if ours else None) or inp.candidate.client_id
    )
    kept, why_new = _current_secret(ours, status)
    fresh = kept is None
    new = Held(inp.candidate.secret, ActiveSecret(id=inp.candidate.secret_id, created_at=now), None, inp.rotate_request)

    expires_at = ref.created + spec.lifetime_td if spec.lifetime_td else None
    expires_at = truncate(expires_at) if expires_at else None
    expired = expires_at is not None and now >= expires_at
    rotates = not spec.revoked and not expired

    # Rotation: only once the service will hold the new hash, so the Secret is written only after it does.
    events: list[Event] = []
    retiring: ActiveSecret | None = None
    retired_why = ""
    retire: rotation.Retirement | None = None
    why_rotate: rotation.RotationReason | None = None
    emergency = kept is not None and rotation.emergency(inp.rotate_request, inp.rotate_now, kept.handled)
    if kept is not None and kept.previous is not None and kept.overlap is not None:
        # When the previous secret goes: at once in an emergency, else when unused past its grace, or at its cap.
        if emergency:
            retiring, retired_why = kept.previous[1], "an emergency rotation stops it at once"
        else:
            usage = _usage_of(inp, kept.overlap.secret_id)
            retire = rotation.retirement(
                kept.overlap,
                kept.record.created_at,
                spec.rotation.grace_period_td,
                spec.rotation.quiet_period_td,
                usage,
                now,
            )
            if retire.retire is not None:
                retiring, retired_why = kept.previous[1], _retire_reason(retire.retire, spec, kept.overlap)
        if retiring is not None:
            kept = replace(kept, previous=None)
            retire = None
    if kept is not None and rotates and _service_ready(inp):
        next_at = rotation.next_rotation(kept.record.created_at, spec.rotation.period_td, ref.uid, kept.overlap)
        why_rotate = rotation.rotation_due(now, next_at, kept.overlap, inp.rotate_request, kept.handled, inp.rotate_now)
    if kept is not None and why_rotate is not None and why_rotate != "emergency":
        not_after = rotation.overlap_until(now, spec.rotation.max_overlap_td)
        new = replace(new, previous=(kept.value, kept.record.model_copy(update={"not_after": not_after})))
    target = new if kept is None or why_rotate is not None else kept  # what the Secret should hold

    want = account_in(inp, client_id, target, expires_at)
    reg = _registration(inp, want, client_id, target.record.id)

    # The Secret: a new value only once the service will hold its hash; repairs of other keys always.
    desired = secret_manifest(ref, spec, secret_name, client_id, target, inp.endpoints)
    fresh_value = target is new
    apply_secret = None
    if inp.secret_refusal is None and (reg.registers or not fresh_value):
        apply_secret = desired if ours is None or fresh_value or _drifted(ours, desired) else None
    if apply_secret is None and kept is not None and fresh_value:
        target = kept  # a rotation not written (yet): the Secret keeps what it holds
    if apply_secret is not None:
        if fresh:
            events.append(_secret_event(why_new, secret_name, client_id))
        elif why_rotate is not None:
            events.append(_rotated_event(why_rotate, secret_name, target))
        elif retiring is None and ours is not None:
            events.append(
                Event("Normal", "SecretRepaired", f"Restored keys, labels or annotations of Secret {secret_name}")
            )
        if retiring is not None:
            events.append(_retired_event(retiring, secret_name, retired_why))
    in_place = inp.secret_refusal is None and (apply_secret is not None or (ours is not None and not fresh))

    written = apply_secret is not None or not fresh
    overlap = target.overlap if written else None
    wanted = _conditions(spec, secret_name, expires_at, expired, reg.condition, in_place, inp.secret_refusal)
    still_in_use = (
        _usage_of(inp, overlap.secret_id)
        if overlap is not None and retire is not None and retire.still_in_use and target is kept
        else None
    )
    wanted.insert(2, _rotating(target, overlap, spec, still_in_use) if written else _not_rotating())
    soon_at = expires_at - spec.expiry_warning_td if expires_at is not None else None
    expiring_soon = soon_at is not None and not expired and now >= soon_at
    wanted.insert(4, _expiring_soon(expires_at, expired, expiring_soon, spec))
    _transition_events(status, wanted, reg.ttl_capped, events)
    _usage_events(status, wanted, events)

    # Role mappings: the whole set of this account's bindings, once the account is (or will be) there.
    mappings = None
    if reg.registers and inp.mappings_failure is None and inp.secret_refusal is None:
        wanted_mappings = rolebinding.desired_mappings(inp.bindings)
        assert isinstance(inp.service, ServiceHolds)
        held = inp.service.account.role_mappings if inp.service.account is not None else ()
        if rolebinding.mappings_differ(held, wanted_mappings):
            mappings = wanted_mappings
    binding_updates = rolebinding.binding_updates(inp.bindings, _sync_outcome(inp, reg, client_id), now)

    active = _with_usage(target.records if written else status.active_secrets, status, inp)
    last_rotation = target.record.created_at if written else status.last_rotation_time
    next_rotation = (
        rotation.next_rotation(last_rotation, spec.rotation.period_td, ref.uid, overlap)
        if last_rotation is not None and rotates
        else None
    )
    new_status = CredentialStatus(
        client_id=client_id,
        identity=identity_of(client_id, inp.endpoints),
        secret_name=secret_name,
        active_secrets=active,
        last_rotation_time=last_rotation,
        next_rotation_time=next_rotation,
        expires_at=expires_at,
        observed_generation=ref.generation,
        conditions=merge_conditions(status.conditions, wanted, now, ref.generation),
    )
    status_doc = status_document(new_status)
    write_status = status_doc if status_doc != status_document(status) else None

    push = reg.push and inp.secret_refusal is None
    first, deadline = rotation_accounts(want) if why_rotate is not None and apply_secret is not None else (want, None)
    step: Step | None = None
    if apply_secret is not None and fresh:
        step = "create"
    elif apply_secret is not None and why_rotate is not None:
        step = "rotate"
    elif retiring is not None:
        step = "retire"
    wake = [resync]
    if expires_at is not None and not expired:
        wake.append(expires_at - now)
    if next_rotation is not None:
        wake.append(next_rotation - now)
    if overlap is not None:
        wake.append(overlap.not_after - now)
    if retire is not None and retire.wake is not None and target is kept:
        wake.append(retire.wake - now)
    if target is not kept and target.previous is not None:
        # Rotating now: look again when the grace period ends (the earliest retirement); the echo of this
        # reconcile's own writes starts no reconcile that would find that moment.
        wake.append(spec.rotation.grace_period_td)
    if soon_at is not None and now < soon_at:
        wake.append(soon_at - now)
    facts = Facts(
        next_rotation=next_rotation,
        expires_at=expires_at,
        expiring_soon=expiring_soon,
        in_use_past_grace=max(still_in_use.distinct_callers, 1) if still_in_use is not None else 0,
        rotated=why_rotate if apply_secret is not None and target is not kept else None,
    )
    return Plan(
        client_id=client_id,
        add_finalizer=not inp.has_finalizer,
        revoke=reg.revoke and push,
        account=first if push else None,
        confirm=reg.fingerprint,
        deadline=deadline if push else None,
        step=step,
        mappings=mappings,
        secret=apply_secret,
        status=write_status,
        bindings=binding_updates,
        events=tuple(events),
        requeue_after=max(min(wake), timedelta(seconds=1)),
        retry=reg.retry or inp.mappings_failure is not None or inp.secret_refusal is not None,
        facts=facts,
    )


def _usage_of(inp: CredentialInput, secret_id: str) -> rotation.Usage | None:
    """What the service saw of a secret; None when it did not answer. A secret it does not hold is unused."""
    if not isinstance(inp.service, ServiceHolds):
        return None
    account = inp.service.account
    for held in account.secrets if account is not None else ():
        if held.id == secret_id:
            return rotation.Usage(held.last_used_at, held.distinct_callers)
    return rotation.Usage(None)


def _with_usage(
    records: tuple[ActiveSecret, ...], status: CredentialStatus, inp: CredentialInput
) -> tuple[ActiveSecret, ...]:
    """Each record's ``lastUsedAt``: the service's, once it is :data:`USAGE_STATUS_STEP` newer than the stored one."""
    stored = {s.id: s.last_used_at for s in status.active_secrets}
    result = []
    for record in records:
        last = stored.get(record.id)
        usage = _usage_of(inp, record.id)
        seen = truncate(usage.last_used_at) if usage is not None and usage.last_used_at is not None else None
        if seen is not None and (last is None or seen - last >= USAGE_STATUS_STEP):
            last = seen
        result.append(record if record.last_used_at == last else record.model_copy(update={"last_used_at": last}))
    return tuple(result)


def _retire_reason(why: rotation.RetireReason, spec: CredentialSpec, overlap: Overlap) -> str:
    if why == "cap":
        return f"it reached its cap (spec.rotation.maxOverlap) at {to_rfc3339(overlap.not_after)}"
    return (
        f"its grace period ({spec.rotation.grace_period}) is over and no caller used it for "
        f"{spec.rotation.quiet_period} (spec.rotation.quietPeriod)"
    )


def _expiring_soon(expires_at: datetime | None, expired: bool, soon: bool, spec: CredentialSpec) -> ConditionSpec:
    if expires_at is None:
        return ConditionSpec(EXPIRING_SOON, "False", REASON_NO_LIFETIME, "spec.lifetime is not set")
    if expired:
        return ConditionSpec(EXPIRING_SOON, "False", REASON_EXPIRED, f"Expired at {to_rfc3339(expires_at)}")
    if soon:
        message = (
            f"The account expires at {to_rfc3339(expires_at)}, within {spec.expiry_warning} (spec.expiryWarning): "
            "the security service refuses its tokens from then on; replace the credential before"
        )
        return ConditionSpec(EXPIRING_SOON, "True", REASON_EXPIRING_SOON, message)
    message = f"Expires at {to_rfc3339(expires_at)}, more than {spec.expiry_warning} from now"
    return ConditionSpec(EXPIRING_SOON, "False", REASON_NOT_EXPIRING_SOON, message)


def _usage_events(status: CredentialStatus, wanted: list[ConditionSpec], events: list[Event]) -> None:
    """A Warning once when a caller still uses a secret past its grace period, and once when expiry nears."""
    for spec in wanted:
        old = find(status.conditions, spec.type)
        if spec.type == ROTATING and spec.reason == REASON_STILL_IN_USE and (old is None or old.reason != spec.reason):
            events.append(Event("Warning", REASON_STILL_IN_USE, spec.message))
        if spec.type == EXPIRING_SOON and spec.status == "True" and (old is None or old.status != "True"):
            events.append(Event("Warning", REASON_EXPIRING_SOON, spec.message))


def _service_ready(inp: CredentialInput) -> bool:
    """The service answered and hashes under our key: a new secret's hash can be registered now."""
    return isinstance(inp.service, ServiceHolds) and inp.service.info.hash_key_id == secretgen.hash_key_id(inp.hash_key)


def _rotating(
    target: Held, overlap: Overlap | None, spec: CredentialSpec, still_in_use: rotation.Usage | None
) -> ConditionSpec:
    if overlap is None:
        return _not_rotating(f"One client secret is live ({target.record.id})")
    cap = to_rfc3339(overlap.not_after)
    if still_in_use is not None:
        last = to_rfc3339(still_in_use.last_used_at) if still_in_use.last_used_at else "recently"
        message = (
            f"Secret {overlap.secret_id} is still in use past its grace period by "
            f"{max(still_in_use.distinct_callers, 1)} caller(s), last at {last}, though secret {target.record.id} "
            f"replaced it: it is retired once unused for {spec.rotation.quiet_period}, and at the latest at {cap}"
        )
        return ConditionSpec(ROTATING, "True", REASON_STILL_IN_USE, message)
    grace_end = to_rfc3339(target.record.created_at + spec.rotation.grace_period_td)
    message = (
        f"Secret {overlap.secret_id} keeps working while workloads switch to secret {target.record.id}: "
        f"at least until {grace_end}, then until unused for {spec.rotation.quiet_period}, at the latest "
        f"until {cap}"
    )
    return ConditionSpec(ROTATING, "True", REASON_GRACE_PERIOD, message)


def _not_rotating(message: str = "No client secret yet") -> ConditionSpec:
    return ConditionSpec(ROTATING, "False", REASON_ONE_SECRET, message)


def _rotated_event(why: rotation.RotationReason, secret_name: str, target: Held) -> Event:
    cause = {
        "period": "as spec.rotation.period says",
        "requested": f"as the {rotation.ANNOTATION_ROTATE} annotation asks",
        "emergency": f"at once, as the {rotation.ANNOTATION_ROTATE_NOW} annotation asks (the old secret stops now)",
    }[why]
    message = f"Rotated the client secret in Secret {secret_name} {cause}: new secret {target.record.id}"
    overlap = target.overlap
    if overlap is not None:
        message += f"; the previous secret {overlap.secret_id} keeps working until {to_rfc3339(overlap.not_after)}"
    return Event("Normal", REASON_SECRET_ROTATED, message)


def _retired_event(record: ActiveSecret, secret_name: str, why: str) -> Event:
    message = f"Retired the previous client secret {record.id} of Secret {secret_name}: {why}"
    return Event("Normal", REASON_OLD_SECRET_RETIRED, message)


def _sync_outcome(inp: CredentialInput, reg: _Registration, client_id: str) -> SyncOutcome:
    if inp.mappings_failure is not None:
        return inp.mappings_failure
    if reg.registers:
        return SyncOutcome(True, rolebinding.REASON_SYNCED, rolebinding.synced_message(client_id))
    reason = {
        REASON_SERVICE_UNREACHABLE: rolebinding.REASON_SERVICE_UNREACHABLE,
        REASON_REFUSED: rolebinding.REASON_REFUSED,
    }.get(reg.condition.reason, rolebinding.REASON_PENDING)
    return SyncOutcome(False, reason, f"The account is not registered yet: {reg.condition.message}")


def _current_secret(ours: ObservedSecret | None, status: CredentialStatus) -> tuple[Held | None, str | None]:
    """The secrets the Secret holds and keeps, or (None, why a new one is needed)."""
    if ours is None:
        return None, "created" if status.client_id is None else "deleted"
    value = ours.data.get(KEY_CLIENT_SECRET)
    if not value:
        return None, "missing"
    if ours.annotations.get(ANNOTATION_SECRET_FINGERPRINT) != secretgen.fingerprint(value):
        return None, "tampered"
    secret_id = ours.annotations.get(ANNOTATION_SECRET_ID)
    known = {s.id: s for s in status.active_secrets}
    created = ours.annotations.get(ANNOTATION_SECRET_CREATED)
    if secret_id in known:
        record = known[secret_id].model_copy(update={"not_after": None})
    elif secret_id and created:
        # Status was lost or not written yet (e.g. restored from a backup without status): rebuild it from the Secret.
        record = ActiveSecret(id=secret_id, created_at=parse_rfc3339(created))
    else:
        return None, "tampered"
    return Held(value, record, _previous_secret(ours), ours.annotations.get(ANNOTATION_ROTATE_HANDLED)), None


def _previous_secret(ours: ObservedSecret) -> tuple[str, ActiveSecret] | None:
    """The secret a rotation replaced, from the Secret alone (the one record written with the new value)."""
    value = ours.data.get(KEY_PREVIOUS_CLIENT_SECRET)
    notes = ours.annotations
    secret_id, created, not_after = (
        notes.get(ANNOTATION_PREVIOUS_ID),
        notes.get(ANNOTATION_PREVIOUS_CREATED),
        notes.get(ANNOTATION_PREVIOUS_NOT_AFTER),
    )
    if not value or not secret_id or not created or not not_after:
        return None
    if notes.get(ANNOTATION_PREVIOUS_FINGERPRINT) != secretgen.fingerprint(value):
        return None  # an edited previous secret is not one credward registered: it is not pushed again
    return value, ActiveSecret(id=secret_id, created_at=parse_rfc3339(created), not_after=parse_rfc3339(not_after))


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
    spec: CredentialSpec,
    secret_name: str,
    expires_at: datetime | None,
    expired: bool,
    registered: ConditionSpec,
    in_place: bool,
    secret_refusal: str | None,
) -> list[ConditionSpec]:
    if spec.revoked:
        ready = ConditionSpec(READY, "False", REASON_REVOKED, "The account is revoked (spec.revoked is true)")
    elif expires_at is not None and expired:
        ready = ConditionSpec(
            READY, "False", REASON_EXPIRED, f"The account's lifetime ended at {to_rfc3339(expires_at)}"
        )
    elif secret_refusal is not None:
        message = f"The API server refused to write Secret {secret_name}: {secret_refusal}"
        ready = ConditionSpec(READY, "False", REASON_SECRET_REFUSED, message)
    elif not in_place:
        message = (
            f"Secret {secret_name} is written once the security service holds its new client secret: "
            f"{registered.message}"
        )
        ready = ConditionSpec(READY, "False", registered.reason, message)
    elif registered.status != "True":
        message = (
            f"Secret {secret_name} exists, but the security service does not hold its secret: {registered.message}"
        )
        ready = ConditionSpec(READY, "False", registered.reason, message)
    else:
        ready = ConditionSpec(
            READY,
            "True",
            REASON_SECRET_READY,
            f"Secret {secret_name} holds the client credentials and the security service accepts them",
        )
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
    return kstatus_conditions([ready, registered, exp, rev])


def _transition_events(
    status: CredentialStatus, wanted: list[ConditionSpec], ttl_capped: bool, events: list[Event]
) -> None:
    """Tell people once, on the transition: expired, revoked, registered, why not registered, a capped TTL."""
    for spec in wanted:
        old = find(status.conditions, spec.type)
        if spec.type in (EXPIRED, REVOKED) and spec.status == "True" and (old is None or old.status != "True"):
            events.append(Event("Warning", spec.reason, spec.message))
        if spec.type == READY and spec.reason == REASON_SECRET_REFUSED and (old is None or old.message != spec.message):
            events.append(Event("Warning", spec.reason, spec.message))
        if spec.type != REGISTERED:
            continue
        if spec.status == "True":
            if old is None or old.status != "True":
                events.append(Event("Normal", spec.reason, spec.message))
            if ttl_capped and (old is None or old.message != spec.message):
                events.append(Event("Warning", REASON_TOKEN_TTL_CAPPED, spec.message))
        elif old is None or old.reason != spec.reason:
            events.append(Event("Warning", spec.reason, spec.message))


def _conflict(inp: CredentialInput, secret_name: str, now: datetime, recheck: timedelta) -> Plan:
    """A foreign Secret has the wanted name: write nothing to it, register nothing, look again soon."""
    ref, status = inp.ref, inp.status
    message = (
        f"Secret {secret_name} already exists and is not owned by this ServiceAccountCredential; "
        "credward never overwrites it. Delete or rename that Secret, or recreate this credential with another "
        "spec.secretName (it is immutable)"
    )
    wanted = kstatus_conditions([ConditionSpec(READY, "False", REASON_SECRET_CONFLICT, message)])
    others = [c for c in status.conditions if c.type not in {w.type for w in wanted}]
    conditions = merge_conditions(status.conditions, wanted, now, ref.generation) + tuple(others)
    new_status = status.model_copy(update={"conditions": conditions, "observed_generation": ref.generation})
    doc = status_document(new_status)
    old = find(status.conditions, READY)
    events: list[Event] = []
    if old is None or old.reason != REASON_SECRET_CONFLICT:
        events.append(Event("Warning", REASON_SECRET_CONFLICT, message))
    outcome = SyncOutcome(False, rolebinding.REASON_PENDING, f"The account has no Secret yet: {message}")
    updates = rolebinding.binding_updates(inp.bindings, outcome, now)
    return Plan(
        client_id=status.client_id,
        add_finalizer=not inp.has_finalizer,
        status=doc if doc != status_document(status) else None,
        bindings=updates,
        events=tuple(events),
        requeue_after=recheck,
    )


CleanupAction = Literal["delete", "release", "give-up"]


def cleanup_action(
    client_id: str | None,
    annotations: Mapping[str, str],
    deleting_since: datetime,
    now: datetime,
    timeout: timedelta,
    *,
    last_failed: bool,
) -> CleanupAction:
    """What the finalizer does for a credential being deleted.

    ``release`` (drop the finalizer, nothing to remove) when no account was ever made or the
    ``credward.io/skip-account-cleanup: "true"`` annotation says so; ``give-up`` when removing the
    account kept failing for ``timeout`` since the deletion began (a service gone for good must not
    block deletion forever); otherwise ``delete`` the account, then drop the finalizer.
    """
    if client_id is None or annotations.get(ANNOTATION_SKIP_CLEANUP, "").lower() == "true":
        return "release"
    if last_failed and now - deleting_since >= timeout:
        return "give-up"
    return "delete"


def secret_manifest(
    ref: CredentialRef,
    spec: CredentialSpec,
    name: str,
    client_id: str,
    held: Held,
    endpoints: Endpoints,
) -> dict[str, Any]:
    """The full Secret credward applies (server-side apply, so removed template keys go away).

    During an overlap it also holds the previous secret and its times: the Secret alone is the record of a
    rotation, written in one step, so a crash before or after that write leaves a consistent state.
    """
    labels = {**spec.secret_template.labels, LABEL_MANAGED_BY: MANAGED_BY, LABEL_CREDENTIAL: ref.name}
    annotations = {
        **spec.secret_template.annotations,
        ANNOTATION_CLIENT_ID: client_id,
        ANNOTATION_SECRET_ID: held.record.id,
        ANNOTATION_SECRET_CREATED: to_rfc3339(held.record.created_at),
        ANNOTATION_SECRET_FINGERPRINT: secretgen.fingerprint(held.value),
    }
    if held.handled is not None:
        annotations[ANNOTATION_ROTATE_HANDLED] = held.handled
    data = {
        KEY_CLIENT_ID: client_id,
        KEY_CLIENT_SECRET: held.value,
        KEY_TOKEN_URL: endpoints.token_url,
        KEY_ISSUER: endpoints.issuer,
    }
    overlap = held.overlap
    if held.previous is not None and overlap is not None:
        value, record = held.previous
        data[KEY_PREVIOUS_CLIENT_SECRET] = value
        annotations[ANNOTATION_PREVIOUS_ID] = record.id
        annotations[ANNOTATION_PREVIOUS_CREATED] = to_rfc3339(record.created_at)
        annotations[ANNOTATION_PREVIOUS_NOT_AFTER] = to_rfc3339(overlap.not_after)
        annotations[ANNOTATION_PREVIOUS_FINGERPRINT] = secretgen.fingerprint(value)
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

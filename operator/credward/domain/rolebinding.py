"""RoleBindings of one account: the role-mapping set to push and what each binding's ``Synced`` says.

Several bindings may name one ServiceAccountCredential; the account holds the
union. The security service keeps one :class:`RoleMapping` per binding (named
after it) and ``PUT .../role-mappings`` replaces the whole set, so deleting a
binding is a push of the remaining ones: it removes exactly what that binding
granted, even where another binding grants the same.

Pure: the controller gathers the bindings and the service's view, this module
answers; the credential's decision (:mod:`credward.domain.credential`) calls it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from credward.api.admin import RoleMapping, RoleMappingsIn
from credward.api.models import RoleBindingSpec, RoleBindingStatus
from credward.domain.conditions import ConditionSpec, merge_conditions
from credward.domain.health import kstatus_conditions

SYNCED = "Synced"

REASON_SYNCED = "Synced"
REASON_ACCOUNT_NOT_FOUND = "AccountNotFound"
REASON_SERVICE_UNREACHABLE = "ServiceUnreachable"
REASON_REFUSED = "Refused"
REASON_PENDING = "Pending"
REASON_INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True, slots=True)
class ObservedBinding:
    """A RoleBinding as read from the API server, with the mapping it contributes.

    ``mapping`` is None if the spec cannot be turned into one (``invalid`` says why).
    """

    name: str
    uid: str
    generation: int
    service_account: str
    mapping: RoleMapping | None
    status: RoleBindingStatus
    invalid: str | None = None

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any]) -> ObservedBinding:
        meta = obj.get("metadata") or {}
        raw_spec = obj.get("spec") or {}
        try:
            status = RoleBindingStatus.model_validate(obj.get("status") or {})
        except ValidationError:
            status = RoleBindingStatus()  # an unreadable status is rewritten, never trusted
        name = str(meta.get("name", ""))
        mapping: RoleMapping | None
        try:
            spec = RoleBindingSpec.model_validate(raw_spec)
            mapping, invalid = RoleMapping(name=name, roles=spec.roles, permissions=spec.permissions), None
        except ValidationError as exc:
            mapping = None
            invalid = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return cls(
            name=name,
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation", 1)),
            service_account=str(raw_spec.get("serviceAccount", "")),
            mapping=mapping,
            status=status,
            invalid=invalid,
        )


@dataclass(frozen=True, slots=True)
class BindingUpdate:
    """A status to write on one RoleBinding, and the Warning to tell people, if any."""

    name: str
    uid: str
    status: dict[str, Any]
    warning: tuple[str, str] | None = None  # (reason, message)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What the bindings of one account read as now: ``Synced`` True, or False with a reason and message."""

    synced: bool
    reason: str
    message: str


def desired_mappings(bindings: Iterable[ObservedBinding]) -> RoleMappingsIn:
    """One mapping per readable binding, named after it, in name order (a stable body, a stable comparison)."""
    mappings = tuple(b.mapping for b in sorted(bindings, key=lambda b: b.name) if b.mapping is not None)
    return RoleMappingsIn(mappings=mappings)


def _canonical(mappings: Iterable[RoleMapping]) -> dict[str, tuple[frozenset[str], frozenset[Any]]]:
    return {
        m.name: (frozenset(m.roles), frozenset((frozenset(p.verbs), p.path) for p in m.permissions)) for m in mappings
    }


def mappings_differ(held: Sequence[RoleMapping], wanted: RoleMappingsIn) -> bool:
    """True if the service's set differs from the wanted one (order of roles, verbs and permissions aside)."""
    return _canonical(held) != _canonical(wanted.mappings)


def binding_updates(
    bindings: Iterable[ObservedBinding], outcome: SyncOutcome, now: datetime
) -> tuple[BindingUpdate, ...]:
    """The status each binding should carry given the account's outcome; only those that change."""
    updates = []
    for b in bindings:
        if b.mapping is None:
            want = ConditionSpec(SYNCED, "False", REASON_INVALID_SPEC, f"The RoleBinding cannot be read: {b.invalid}")
        elif outcome.synced:
            want = ConditionSpec(SYNCED, "True", outcome.reason, outcome.message)
        else:
            want = ConditionSpec(SYNCED, "False", outcome.reason, outcome.message)
        update = _update(b, [want], now)
        if update is not None:
            updates.append(update)
    return tuple(updates)


def _conditions(wanted: list[ConditionSpec]) -> list[ConditionSpec]:
    """The binding's full condition list: ``Synced`` sums it up, kstatus reads Reconciling/Stalled from it."""
    return kstatus_conditions(wanted, summary=SYNCED)


def _update(binding: ObservedBinding, wanted: list[ConditionSpec], now: datetime) -> BindingUpdate | None:
    conditions = merge_conditions(binding.status.conditions, _conditions(wanted), now, binding.generation)
    new = RoleBindingStatus(observed_generation=binding.generation, conditions=conditions)
    doc = binding_status_document(new)
    if doc == binding_status_document(binding.status):
        return None
    old = next((c for c in binding.status.conditions if c.type == SYNCED), None)
    head = wanted[0]
    warning = None
    if head.status != "True" and (old is None or (old.reason, old.message) != (head.reason, head.message)):
        warning = (head.reason, head.message)
    return BindingUpdate(name=binding.name, uid=binding.uid, status=doc, warning=warning)


def orphan_updates(bindings: Iterable[ObservedBinding], account: str, now: datetime) -> tuple[BindingUpdate, ...]:
    """Bindings that name a ServiceAccountCredential that does not exist: they wait for it."""
    outcome = SyncOutcome(
        False,
        REASON_ACCOUNT_NOT_FOUND,
        f"No ServiceAccountCredential {account} in this namespace (bindings are same-namespace only); "
        "the binding is synced as soon as it exists",
    )
    return binding_updates(bindings, outcome, now)


def synced_message(client_id: str) -> str:
    return f"The security service holds this binding's roles and permissions for client {client_id}"


def binding_status_document(status: RoleBindingStatus) -> dict[str, Any]:
    doc: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in doc.items() if v != []}

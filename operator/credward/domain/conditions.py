"""Status conditions in the standard Kubernetes shape, updated without spurious writes.

``lastTransitionTime`` changes only when a condition's status changes, so
re-deriving the same conditions from the same facts yields identical status
and the operator writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from credward.api.models import Condition, ConditionStatus


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """What a condition should say now; the time is filled in by :func:`merge_conditions`."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def merge_conditions(
    current: Iterable[Condition], wanted: Iterable[ConditionSpec], now: datetime, generation: int | None
) -> tuple[Condition, ...]:
    """The new condition list: ``wanted`` in order, keeping transition times where status is unchanged.

    Conditions of types not in ``wanted`` are dropped: each reconcile states them all.
    """
    by_type = {c.type: c for c in current}
    out = []
    for spec in wanted:
        old = by_type.get(spec.type)
        since = old.last_transition_time if old is not None and old.status == spec.status else now
        out.append(
            Condition(
                type=spec.type,
                status=spec.status,
                reason=spec.reason,
                message=spec.message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return tuple(out)


def find(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)

"""When a client secret is rotated and when the previous one is retired: small pure checks over stored state.

Everything here reads what is stored — the current secret's ``createdAt`` and
the previous secret's ``notAfter`` (both kept in the Secret's annotations and
mirrored in status), the credential's ``credward.io/rotate`` annotation and the
request value last carried out — and the clock passed in. So a restarted
operator reaches the same answer: a rotation that was due is done once, one
that was done is not done again, and the controller's wake-up is simply the
time these functions name.

A rotation never starts while an overlap is still open: the previous secret
keeps its whole grace period, so no workload that has not yet re-read its
file is cut off by a second rotation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from credward.api import GROUP

# Set to any new value on a credential to rotate its secret once per value.
ANNOTATION_ROTATE = f"{GROUP}/rotate"

# A credential rotates up to this share of its period early, so that accounts created together spread out...
JITTER_FRACTION = 0.05
# ...but never more than this early, however long the period.
JITTER_CAP = timedelta(hours=1)

RotationReason = Literal["period", "requested"]


@dataclass(frozen=True, slots=True)
class Overlap:
    """The previous secret, still accepted by the service until ``not_after``."""

    secret_id: str
    not_after: datetime


def jitter(uid: str, period: timedelta) -> timedelta:
    """How early this credential rotates: a fixed share of ``period`` taken from its uid (whole seconds, capped).

    Derived from the uid rather than drawn at random, so that every reconcile and every operator restart
    computes the same schedule.
    """
    share = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
    span = min(period * JITTER_FRACTION, JITTER_CAP)
    return timedelta(seconds=int(span.total_seconds() * share))


def next_rotation(created_at: datetime, period: timedelta, uid: str, overlap: Overlap | None) -> datetime:
    """When the current secret (issued at ``created_at``) is replaced; never before an open overlap closes."""
    due = created_at + period - jitter(uid, period)
    return max(due, overlap.not_after) if overlap is not None else due


def rotation_due(
    now: datetime, next_at: datetime, overlap: Overlap | None, request: str | None, handled: str | None
) -> RotationReason | None:
    """Why the secret must be rotated now, or None.

    ``requested``: the ``credward.io/rotate`` annotation holds a value not carried out yet (``handled`` is the
    value recorded with the current secret). ``period``: the schedule says so. Neither while an overlap is open.
    """
    if overlap is not None and now < overlap.not_after:
        return None
    if request is not None and request != handled:
        return "requested"
    if now >= next_at:
        return "period"
    return None


def retired(overlap: Overlap, now: datetime) -> bool:
    """The previous secret's grace period is over: drop it from the service and from the Secret."""
    return now >= overlap.not_after


def overlap_until(rotated_at: datetime, grace_period: timedelta) -> datetime:
    """``notAfter`` of the secret a rotation at ``rotated_at`` replaces."""
    return rotated_at + grace_period

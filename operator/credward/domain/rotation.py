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

Retirement knows who still uses the previous secret (:func:`retirement`): it
goes once the grace period has passed *and* nobody used it for the quiet
period since the new one was written, and never later than its hard cap
(``notAfter``, which the security service enforces by itself, so nothing
outlives its cap even while the operator is down). An emergency rotation
(``credward.io/rotate-now`` equal to the ``credward.io/rotate`` value being
carried out) keeps no previous secret at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from credward.api import GROUP

# Set to any new value on a credential to rotate its secret once per value.
ANNOTATION_ROTATE = f"{GROUP}/rotate"
# Set to the same value as credward.io/rotate for an emergency rotation: the replaced secret(s) stop at once.
ANNOTATION_ROTATE_NOW = f"{GROUP}/rotate-now"

# A credential rotates up to this share of its period early, so that accounts created together spread out...
JITTER_FRACTION = 0.05
# ...but never more than this early, however long the period.
JITTER_CAP = timedelta(hours=1)

RotationReason = Literal["period", "requested", "emergency"]
RetireReason = Literal["quiet", "cap"]


@dataclass(frozen=True, slots=True)
class Overlap:
    """The previous secret, accepted by the service until ``not_after`` (its hard cap) unless retired earlier."""

    secret_id: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Usage:
    """What the security service saw of a secret: its last use (None: never) and its distinct callers lately."""

    last_used_at: datetime | None
    distinct_callers: int = 0


@dataclass(frozen=True, slots=True)
class Retirement:
    """The answer of :func:`retirement`.

    ``retire``: why the previous secret goes now, or None. ``still_in_use``: the grace period is over but
    the secret was used within the quiet period (a workload has not switched yet: say so). ``wake``: when to
    look again if it stays.
    """

    retire: RetireReason | None
    still_in_use: bool = False
    wake: datetime | None = None


def retirement(
    overlap: Overlap,
    rotated_at: datetime,
    grace_period: timedelta,
    quiet_period: timedelta,
    usage: Usage | None,
    now: datetime,
) -> Retirement:
    """Whether the previous secret of an overlap that began at ``rotated_at`` is retired now.

    Retire at the hard cap (``overlap.not_after``) whatever happens; before it, once the grace period has
    passed and the secret has gone unused for ``quiet_period`` since the new secret was written (a use
    before the rotation does not count). ``usage`` None means the service's view is unknown (it did not
    answer): the secret then stays until the cap, the safe side for a workload that has not switched.
    """
    cap = overlap.not_after
    if now >= cap:
        return Retirement("cap")
    grace_end = rotated_at + grace_period
    if now < grace_end:
        return Retirement(None, wake=min(grace_end, cap))
    if usage is None:
        return Retirement(None, wake=cap)
    last = usage.last_used_at
    quiet_end = max(rotated_at, last or rotated_at) + quiet_period
    if now >= quiet_end:
        return Retirement("quiet")
    in_use = last is not None and last >= rotated_at
    return Retirement(None, still_in_use=in_use, wake=min(quiet_end, cap))


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


def emergency(request: str | None, now_request: str | None, handled: str | None) -> bool:
    """``credward rotate --now``: a rotate request not carried out yet whose ``rotate-now`` names the same value."""
    return request is not None and request != handled and now_request == request


def rotation_due(
    now: datetime,
    next_at: datetime,
    overlap: Overlap | None,
    request: str | None,
    handled: str | None,
    now_request: str | None = None,
) -> RotationReason | None:
    """Why the secret must be rotated now, or None.

    ``emergency``: :func:`emergency` (even during an overlap: it ends it). ``requested``: the
    ``credward.io/rotate`` annotation holds a value not carried out yet (``handled`` is the value recorded
    with the current secret). ``period``: the schedule says so. Neither while an overlap is open.
    """
    if emergency(request, now_request, handled):
        return "emergency"
    if overlap is not None and now < overlap.not_after:
        return None
    if request is not None and request != handled:
        return "requested"
    if now >= next_at:
        return "period"
    return None


def overlap_until(rotated_at: datetime, max_overlap: timedelta) -> datetime:
    """``notAfter`` of the secret a rotation at ``rotated_at`` replaces: its hard cap, enforced by the service."""
    return rotated_at + max_overlap

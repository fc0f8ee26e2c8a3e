"""Usage-aware retirement, emergency rotation and expiry warnings, decided over stored state as a fake clock moves."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.unit.test_credential_decide import NOW, REF, decoded, observe, run, spec, status_of
from tests.unit.test_rotation import FIRST, SECOND, THIRD, World, reasons, rotating, secrets_pushed

from credward.api.admin import SecretView
from credward.api.models import CredentialStatus
from credward.domain.credential import USAGE_STATUS_STEP, ServiceHolds, ServiceUnreachable
from credward.domain.rotation import Overlap, Retirement, Usage, jitter, retirement

PERIOD = timedelta(hours=1)
GRACE = timedelta(minutes=10)
QUIET = timedelta(minutes=5)
CAP = timedelta(minutes=30)
USAGE_SPEC = spec(rotation={"period": "1h", "gracePeriod": "10m", "quietPeriod": "5m", "maxOverlap": "30m"})
DUE = NOW + PERIOD - jitter(REF.uid, PERIOD)


# -- the pure rule -----------------------------------------------------------------------------------------------


def test_retirement_waits_for_grace_then_quiet_and_never_past_the_cap() -> None:
    rotated = NOW
    overlap = Overlap("old", rotated + CAP)

    def at(minutes: float, usage: Usage | None) -> Retirement:
        return retirement(overlap, rotated, GRACE, QUIET, usage, rotated + timedelta(minutes=minutes))

    # Inside the grace period nothing goes, used or not; look again when it ends.
    assert at(3, Usage(None)) == Retirement(None, wake=rotated + GRACE)
    # Unused since the rotation, grace over and quiet since the rotation: retired.
    assert at(10, Usage(None)) == Retirement("quiet")
    assert at(10, Usage(rotated - timedelta(minutes=1), 2)) == Retirement("quiet")  # a use before does not count
    # Used 2 minutes ago, past its grace: still in use, look again when it would have been quiet.
    last = rotated + timedelta(minutes=9)
    assert at(11, Usage(last, 3)) == Retirement(None, still_in_use=True, wake=last + QUIET)
    assert at(14, Usage(last, 3)) == Retirement("quiet")
    # Used all along: the cap ends it anyway.
    assert at(29.9, Usage(rotated + timedelta(minutes=29.8), 1)).retire is None
    assert at(30, Usage(rotated + timedelta(minutes=29.9), 1)) == Retirement("cap")
    # The service did not answer: the secret stays, but not past the cap.
    assert at(12, None) == Retirement(None, wake=rotated + CAP)
    assert at(30, None) == Retirement("cap")


# -- decide() over a world whose clock moves --------------------------------------------------------------------


def used(world: World, secret_id: str, at: datetime, callers: int) -> None:
    """The service saw ``callers`` distinct callers use ``secret_id``, the last at ``at``."""
    assert isinstance(world.service, ServiceHolds)
    view = world.service.account
    assert view is not None
    secrets = tuple(
        SecretView.model_validate({**s.model_dump(by_alias=True), "lastUsedAt": at, "distinctCallers": callers})
        if s.id == secret_id
        else s
        for s in view.secrets
    )
    world.service = ServiceHolds(
        world.service.info, view.model_copy(update={"secrets": secrets}), world.service.confirmed
    )


def test_a_secret_still_used_past_its_grace_stays_with_a_warning_until_quiet() -> None:
    world = World()
    world.step(NOW, FIRST)
    plan = world.decide(DUE, SECOND, spec=USAGE_SPEC)
    assert secrets_pushed(plan) == [("second01", None), ("first001", DUE + CAP)]  # the cap is the notAfter
    assert "then until unused for 5m" in rotating(plan)[2]
    world.carry_out(plan)

    last = DUE + GRACE - timedelta(seconds=20)
    used(world, "first001", last, 2)
    plan = world.decide(DUE + GRACE, THIRD, spec=USAGE_SPEC)
    assert plan.secret is None  # not retired: a caller used it 20 s ago
    status, reason, message = rotating(plan)
    assert (status, reason) == ("True", "SecretStillInUse")
    assert "first001" in message
    assert "2 caller(s)" in message
    assert reasons(plan) == ["SecretStillInUse"]
    (warning,) = plan.events
    assert warning.type == "Warning"
    assert "cws_first" not in warning.message
    assert "cws_second" not in warning.message
    assert plan.facts.in_use_past_grace == 2
    assert plan.requeue_after == last + QUIET - (DUE + GRACE)  # look again when it would be quiet
    world.carry_out(plan)
    assert world.decide(DUE + GRACE + timedelta(seconds=30), THIRD, spec=USAGE_SPEC).events == ()  # warned once

    plan = world.decide(last + QUIET, THIRD, spec=USAGE_SPEC)
    assert secrets_pushed(plan) == [("second01", None)]
    assert "previous-client-secret" not in decoded(plan)
    assert reasons(plan) == ["OldSecretRetired"]
    assert "quietPeriod" in plan.events[0].message
    assert plan.facts.in_use_past_grace == 0


def test_a_secret_used_until_its_cap_is_retired_at_the_cap() -> None:
    world = World()
    world.step(NOW, FIRST)
    world.carry_out(world.decide(DUE, SECOND, spec=USAGE_SPEC))
    used(world, "first001", DUE + CAP - timedelta(seconds=1), 1)
    assert world.decide(DUE + CAP - timedelta(seconds=1), THIRD, spec=USAGE_SPEC).secret is None
    plan = world.decide(DUE + CAP, THIRD, spec=USAGE_SPEC)
    assert secrets_pushed(plan) == [("second01", None)]
    assert "maxOverlap" in plan.events[-1].message


def test_an_unused_secret_goes_when_the_grace_period_ends() -> None:
    world = World()
    world.step(NOW, FIRST)
    world.carry_out(world.decide(DUE, SECOND, spec=USAGE_SPEC))
    assert world.decide(DUE + GRACE - timedelta(seconds=1), THIRD, spec=USAGE_SPEC).secret is None
    plan = world.decide(DUE + GRACE, THIRD, spec=USAGE_SPEC)
    assert secrets_pushed(plan) == [("second01", None)]


def test_without_the_services_view_the_secret_stays_until_its_cap() -> None:
    world = World()
    world.step(NOW, FIRST)
    world.carry_out(world.decide(DUE, SECOND, spec=USAGE_SPEC))
    world.service = ServiceUnreachable("connection refused")
    assert world.decide(DUE + GRACE + QUIET, THIRD, spec=USAGE_SPEC).secret is None
    plan = world.decide(DUE + CAP, THIRD, spec=USAGE_SPEC)
    assert plan.secret is not None  # the service refuses it by itself from its notAfter: the Secret drops it too
    assert "previous-client-secret" not in decoded(plan)


def test_emergency_rotation_keeps_no_previous_secret_even_inside_an_overlap() -> None:
    world = World()
    world.step(NOW, FIRST)
    world.carry_out(world.decide(DUE, SECOND, spec=USAGE_SPEC))  # an overlap is open
    world.request = world.request_now = "leaked"
    plan = world.decide(DUE + timedelta(minutes=1), THIRD, spec=USAGE_SPEC)
    assert secrets_pushed(plan) == [("third001", None)]  # both old secrets stop at once
    data = decoded(plan)
    assert data["client-secret"] == "cws_third"
    assert "previous-client-secret" not in data
    assert reasons(plan) == ["SecretRotated", "OldSecretRetired"]
    assert "rotate-now" in plan.events[0].message
    assert plan.facts.rotated == "emergency"
    world.carry_out(plan)
    assert world.decide(DUE + timedelta(minutes=2), FIRST, spec=USAGE_SPEC).writes == 0  # once per value


def test_rotate_now_naming_another_value_is_a_normal_rotation() -> None:
    world = World()
    world.step(NOW, FIRST)
    world.request, world.request_now = "second", "first"
    plan = world.decide(NOW + timedelta(minutes=1), SECOND, spec=USAGE_SPEC)
    assert [i for i, _ in secrets_pushed(plan)] == ["second01", "first001"]


def test_last_use_reaches_the_status_in_steps() -> None:
    world = World()
    world.step(NOW, FIRST)
    used(world, "first001", NOW + timedelta(seconds=10), 1)
    plan = world.step(NOW + timedelta(seconds=10), SECOND)
    assert [s.last_used_at for s in status_of(plan).active_secrets] == [NOW + timedelta(seconds=10)]
    used(world, "first001", NOW + timedelta(seconds=40), 1)
    assert world.decide(NOW + timedelta(seconds=40), SECOND).status is None  # less than a step newer: no write
    used(world, "first001", NOW + timedelta(seconds=10) + USAGE_STATUS_STEP, 1)
    plan = world.decide(NOW + timedelta(seconds=80), SECOND)
    assert [s.last_used_at for s in status_of(plan).active_secrets] == [NOW + timedelta(seconds=10) + USAGE_STATUS_STEP]


def test_expiring_soon_turns_true_within_the_warning_with_one_warning_then_expired() -> None:
    s = spec(lifetime="48h", expiryWarning="2h")
    expires = REF.created + timedelta(hours=48)
    plan = run(s, CredentialStatus(), None)
    st = status_of(plan)
    conds = {c.type: c for c in st.conditions}
    assert (conds["ExpiringSoon"].status, conds["ExpiringSoon"].reason) == ("False", "NotExpiringSoon")
    assert plan.requeue_after == timedelta(minutes=10)
    before = expires - timedelta(hours=2) - timedelta(seconds=30)
    assert run(s, st, observe(plan), now=before, resync=timedelta(days=1)).requeue_after == timedelta(seconds=30)
    soon = run(s, st, observe(plan), now=expires - timedelta(hours=1))
    conds = {c.type: c for c in status_of(soon).conditions}
    assert (conds["ExpiringSoon"].status, conds["ExpiringSoon"].reason) == ("True", "ExpiringSoon")
    assert [e.reason for e in soon.events] == ["ExpiringSoon"]
    assert soon.facts.expiring_soon
    assert soon.facts.expires_at == expires
    st = status_of(soon)
    assert run(s, st, observe(plan), now=expires - timedelta(minutes=30)).events == ()
    gone = run(s, st, observe(plan), now=expires)
    conds = {c.type: c for c in status_of(gone).conditions}
    assert (conds["ExpiringSoon"].status, conds["ExpiringSoon"].reason) == ("False", "Expired")
    assert conds["Expired"].status == "True"
    assert not gone.facts.expiring_soon


def test_a_requested_rotation_asks_to_look_again_when_its_grace_period_ends() -> None:
    """Its own writes' echoes start no reconcile, so the rotating decision itself schedules the retirement look."""
    long_period = spec(rotation={"period": "720h", "gracePeriod": "8s", "quietPeriod": "12s", "maxOverlap": "10m"})
    world = World()
    world.carry_out(world.decide(NOW, FIRST, spec=long_period))
    world.request = "now"
    at = NOW + timedelta(minutes=1)
    plan = world.decide(at, SECOND, spec=long_period)
    assert plan.step == "rotate"
    assert plan.requeue_after == timedelta(seconds=8)  # not the cap (10m): a quiet old secret goes then

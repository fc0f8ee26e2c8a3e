"""Rotation: the schedule, the overlap and retirement, decided over stored state while a fake clock moves."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from tests.unit.test_credential_decide import (
    ENDPOINTS,
    HASH_KEY,
    INFO,
    NOW,
    REF,
    decoded,
    holds,
    observe,
    spec,
    status_of,
)

from credward.api.admin import AccountView
from credward.api.models import CredentialStatus
from credward.domain.credential import (
    ANNOTATION_PREVIOUS_ID,
    Candidate,
    CredentialInput,
    ObservedSecret,
    Plan,
    ServiceHolds,
    ServiceState,
    ServiceUnreachable,
    decide,
)
from credward.domain.rotation import JITTER_CAP, Overlap, jitter, next_rotation, retired, rotation_due

PERIOD = timedelta(hours=1)
GRACE = timedelta(minutes=10)
SPEC = spec(rotation={"period": "1h", "gracePeriod": "10m"})
FIRST = Candidate("11111111-2222-3333-4444-555555555555", "cws_first", "first001")
SECOND = Candidate("99999999-2222-3333-4444-555555555555", "cws_second", "second01")
THIRD = Candidate("88888888-2222-3333-4444-555555555555", "cws_third", "third001")
DUE = NOW + PERIOD - jitter(REF.uid, PERIOD)  # when a secret issued at NOW is rotated


def after(plan: Plan, *, deadline: bool = False) -> ServiceHolds:
    """What the service holds once ``plan``'s account (or its ``deadline`` push) was accepted (ids and times)."""
    account = plan.deadline if deadline else plan.account
    assert account is not None
    doc = account.model_dump(by_alias=True, mode="json")
    view = AccountView.model_validate(
        {
            **doc,
            "clientId": plan.client_id,
            "effectiveTokenTTLSeconds": doc["tokenTTLSeconds"],
            "secrets": [{k: v for k, v in s.items() if k != "hash"} for s in doc["secrets"]],
        }
    )
    return holds(view, plan.confirm if deadline or plan.deadline is None else None)


class World:
    """The stored state (status, Secret, what the service holds) that plans are carried out against."""

    def __init__(self) -> None:
        self.status = CredentialStatus()
        self.secret: ObservedSecret | None = None
        self.service: ServiceState = holds()
        self.request: str | None = None

    def decide(self, now: Any, candidate: Candidate, **kw: Any) -> Plan:
        inp = CredentialInput(
            ref=REF,
            spec=kw.pop("spec", SPEC),
            status=self.status,
            secret=self.secret,
            bindings=(),
            service=self.service,
            hash_key=HASH_KEY,
            candidate=candidate,
            endpoints=ENDPOINTS,
            rotate_request=self.request,
        )
        return decide(inp, now, **kw)

    def carry_out(self, plan: Plan, *, until: str = "all") -> None:
        """Apply the plan in the controller's order, stopping (a crash) after ``push``, ``secret`` or ``deadline``."""
        if plan.account is not None:
            self.service = after(plan)
        if until == "push":
            return
        if plan.secret is not None:
            self.secret = observe(plan)
        if until == "secret":
            return
        if plan.deadline is not None:
            self.service = after(plan, deadline=True)
        if until == "deadline":
            return
        if plan.status is not None:
            self.status = status_of(plan)

    def step(self, now: Any, candidate: Candidate) -> Plan:
        plan = self.decide(now, candidate)
        self.carry_out(plan)
        return plan


def created() -> World:
    world = World()
    world.step(NOW, FIRST)
    assert world.decide(NOW, SECOND).writes == 0
    return world


def secrets_pushed(plan: Plan) -> list[tuple[str, Any]]:
    """What the account finally holds after the plan: its deadline push if it has one, else its push."""
    account = plan.deadline or plan.account
    assert account is not None
    return [(s.id, s.not_after) for s in account.secrets]


def first_push(plan: Plan) -> list[tuple[str, Any]]:
    assert plan.account is not None
    return [(s.id, s.not_after) for s in plan.account.secrets]


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def rotating(plan_or_status: Plan | CredentialStatus) -> tuple[str, str, str]:
    st = status_of(plan_or_status) if isinstance(plan_or_status, Plan) else plan_or_status
    cond = next(c for c in st.conditions if c.type == "Rotating")
    return cond.status, cond.reason, cond.message


# -- the pure checks ------------------------------------------------------------------------------------------


def test_jitter_is_a_fixed_small_share_of_the_period_taken_from_the_uid() -> None:
    assert jitter("uid-1", PERIOD) == jitter("uid-1", PERIOD)  # the same after any restart
    spread = {jitter(f"uid-{i}", PERIOD) for i in range(1000)}
    assert all(timedelta(0) <= j <= PERIOD * 0.05 for j in spread)
    assert len(spread) > 150  # 1000 accounts created together rotate spread over 180 seconds
    year = timedelta(hours=8760)
    assert all(jitter(f"uid-{i}", year) <= JITTER_CAP for i in range(100))
    assert max(jitter(f"uid-{i}", year) for i in range(100)) > JITTER_CAP / 2


def test_next_rotation_waits_for_an_open_overlap() -> None:
    plain = next_rotation(NOW, PERIOD, "u", None)
    assert plain == NOW + PERIOD - jitter("u", PERIOD)
    late = Overlap("old", plain + timedelta(minutes=5))
    assert next_rotation(NOW, PERIOD, "u", late) == late.not_after


def test_rotation_due_as_the_clock_moves() -> None:
    at = NOW + PERIOD
    assert rotation_due(at - timedelta(seconds=1), at, None, None, None) is None
    assert rotation_due(at, at, None, None, None) == "period"
    assert rotation_due(at + timedelta(days=3), at, None, None, None) == "period"  # late, not skipped
    assert rotation_due(NOW, at, None, "v1", None) == "requested"
    assert rotation_due(NOW, at, None, "v1", "v1") is None  # carried out already
    open_ = Overlap("old", NOW + timedelta(minutes=1))
    assert rotation_due(NOW, at, open_, "v2", "v1") is None  # waits for the overlap to close
    assert rotation_due(open_.not_after, at, open_, "v2", "v1") == "requested"
    assert not retired(open_, open_.not_after - timedelta(seconds=1))
    assert retired(open_, open_.not_after)


# -- decide() over a world whose clock moves --------------------------------------------------------------------


def test_nothing_happens_before_the_rotation_is_due_and_the_wake_up_is_at_it() -> None:
    world = created()
    plan = world.decide(NOW + timedelta(minutes=30), SECOND, resync=timedelta(days=1))
    assert plan.writes == 0
    assert plan.account is None
    assert plan.requeue_after == DUE - (NOW + timedelta(minutes=30))
    assert world.status.next_rotation_time == DUE
    assert world.status.last_rotation_time == NOW
    assert rotating(world.status) == ("False", "OneSecret", "One client secret is live (first001)")


def test_due_rotation_registers_both_secrets_then_writes_the_new_one() -> None:
    world = created()
    plan = world.decide(DUE, SECOND)
    # The service is told first: the new secret beside the old one, neither with a deadline...
    assert first_push(plan) == [("second01", None), ("first001", None)]
    assert plan.step == "rotate"
    # ...and once the Secret holds the new one, the old one's deadline: the end of the grace period.
    assert secrets_pushed(plan) == [("second01", None), ("first001", DUE + GRACE)]
    data = decoded(plan)
    assert data["client-secret"] == "cws_second"
    assert data["previous-client-secret"] == "cws_first"
    assert data["client-id"] == FIRST.client_id  # the client id never changes
    st = status_of(plan)
    assert [(s.id, s.created_at, s.not_after) for s in st.active_secrets] == [
        ("second01", DUE, None),
        ("first001", NOW, DUE + GRACE),
    ]
    assert st.last_rotation_time == DUE
    assert st.next_rotation_time == DUE + PERIOD - jitter(REF.uid, PERIOD)
    status, reason, message = rotating(plan)
    assert (status, reason) == ("True", "GracePeriod")
    assert "first001" in message
    assert "2026-11-22T13:" in message
    assert reasons(plan) == ["SecretRotated"]
    assert plan.requeue_after == GRACE  # wake up to retire the old one
    text = repr(plan.status) + repr(plan.events)
    assert "cws_first" not in text
    assert "cws_second" not in text


def test_no_rotation_while_the_service_cannot_register_the_new_secret() -> None:
    world = created()
    world.service = ServiceUnreachable("connection refused")
    plan = world.decide(DUE, SECOND)
    assert plan.secret is None
    assert plan.account is None
    assert plan.retry
    world.service = holds()  # store wiped meanwhile: both secrets are registered, then the Secret written
    plan = world.decide(DUE + timedelta(minutes=2), SECOND)
    assert [i for i, _ in secrets_pushed(plan)] == ["second01", "first001"]
    assert decoded(plan)["client-secret"] == "cws_second"


def test_restart_after_the_rotation_neither_repeats_nor_skips_it() -> None:
    world = created()
    world.step(DUE, SECOND)
    later = DUE + timedelta(minutes=1)
    assert isinstance(world.service, ServiceHolds)
    world.service = replace(world.service, confirmed=None)  # a restarted operator remembers no push
    plan = world.decide(later, THIRD)
    assert plan.secret is None
    assert plan.status is None
    assert not plan.events
    assert secrets_pushed(plan) == [("second01", None), ("first001", DUE + GRACE)]  # pushed once more, the same


def test_crash_after_registering_before_writing_registers_a_fresh_candidate() -> None:
    world = created()
    world.carry_out(world.decide(DUE, SECOND), until="push")  # the operator dies here
    assert world.secret is not None
    assert decoded_secret(world)["client-secret"] == "cws_first"
    restart = DUE + timedelta(seconds=30)
    plan = world.decide(restart, THIRD)
    # The stale candidate is dropped from the service; the Secret's secret stays listed, with a fresh grace.
    assert secrets_pushed(plan) == [("third001", None), ("first001", restart + GRACE)]
    assert decoded(plan)["client-secret"] == "cws_third"
    world.carry_out(plan)
    assert world.decide(restart, SECOND).writes == 0


def test_crash_after_writing_the_secret_before_the_status_is_rebuilt_from_the_secret() -> None:
    world = created()
    world.carry_out(world.decide(DUE, SECOND), until="secret")  # the status still names only the first secret
    plan = world.decide(DUE + timedelta(seconds=5), THIRD)
    assert plan.secret is None  # no second rotation
    st = status_of(plan)
    assert [(s.id, s.not_after) for s in st.active_secrets] == [("second01", None), ("first001", DUE + GRACE)]
    assert st.last_rotation_time == DUE


def test_the_old_secret_is_retired_after_the_grace_period() -> None:
    world = created()
    world.step(DUE, SECOND)
    assert world.decide(DUE + GRACE - timedelta(seconds=1), THIRD).writes == 0
    plan = world.decide(DUE + GRACE, THIRD)
    assert secrets_pushed(plan) == [("second01", None)]
    assert plan.secret is not None
    assert "previous-client-secret" not in decoded(plan)
    assert ANNOTATION_PREVIOUS_ID not in plan.secret["metadata"]["annotations"]
    assert reasons(plan) == ["OldSecretRetired"]
    assert [s.id for s in status_of(plan).active_secrets] == ["second01"]
    assert rotating(plan)[:2] == ("False", "OneSecret")
    world.carry_out(plan)
    assert world.decide(DUE + GRACE + timedelta(seconds=1), THIRD).writes == 0


def test_a_rotate_annotation_rotates_once_per_new_value() -> None:
    world = created()
    world.request = "2026-11-22"
    early = NOW + timedelta(minutes=5)
    plan = world.step(early, SECOND)
    assert decoded(plan)["client-secret"] == "cws_second"
    assert secrets_pushed(plan) == [("second01", None), ("first001", early + GRACE)]
    assert "annotation" in plan.events[0].message
    assert world.decide(early + timedelta(minutes=5), THIRD).secret is None  # the same value: done already
    world.request = "again"
    assert world.decide(early + timedelta(minutes=1), THIRD).secret is None  # waits for the overlap to close
    plan = world.step(early + GRACE, THIRD)  # the overlap closes: retire the old secret and rotate, in one step
    assert decoded(plan)["client-secret"] == "cws_third"
    assert secrets_pushed(plan) == [("third001", None), ("second01", early + 2 * GRACE)]
    assert reasons(plan) == ["SecretRotated", "OldSecretRetired"]
    assert world.decide(early + GRACE + timedelta(seconds=1), SECOND).writes == 0


def test_an_annotation_present_at_creation_does_not_rotate_at_once() -> None:
    world = World()
    world.request = "v1"
    world.step(NOW, FIRST)
    assert world.decide(NOW + timedelta(seconds=5), SECOND).writes == 0


def test_a_revoked_account_is_not_rotated() -> None:
    world = created()
    plan = world.decide(DUE, SECOND, spec=spec(rotation={"period": "1h", "gracePeriod": "10m"}, revoked=True))
    assert plan.secret is None
    assert status_of(plan).next_rotation_time is None


def decoded_secret(world: World) -> dict[str, str]:
    assert world.secret is not None
    return dict(world.secret.data)


def test_info_is_the_one_the_tests_hash_under() -> None:
    assert INFO.hash_key_id  # the world's service shares the test hash key


# -- crash safety: the service never holds a deadline for the secret the Secret still serves --------------------


def service_secrets(world: World) -> list[tuple[str, Any]]:
    assert isinstance(world.service, ServiceHolds)
    assert world.service.account is not None
    return [(s.id, s.not_after) for s in world.service.account.secrets]


def test_a_crash_after_registering_never_strands_the_secret_however_long_the_operator_is_down() -> None:
    world = created()
    world.carry_out(world.decide(DUE, SECOND), until="push")  # the operator dies here...
    # ...and the Secret's secret has no deadline in the service: it is accepted for as long as the operator is down.
    assert decoded_secret(world)["client-secret"] == "cws_first"
    assert service_secrets(world) == [("second01", None), ("first001", None)]
    back = DUE + 10 * GRACE
    plan = world.decide(back, THIRD)
    assert first_push(plan) == [("third001", None), ("first001", None)]  # the lost candidate is dropped
    world.carry_out(plan)
    assert service_secrets(world) == [("third001", None), ("first001", back + GRACE)]


def test_a_crash_after_the_secret_write_registers_the_recorded_deadline_never_a_later_one() -> None:
    world = created()
    world.carry_out(world.decide(DUE, SECOND), until="secret")
    assert service_secrets(world) == [("second01", None), ("first001", None)]
    plan = world.decide(DUE + GRACE / 2, THIRD)  # back within the grace period
    assert plan.secret is None
    assert secrets_pushed(plan) == [("second01", None), ("first001", DUE + GRACE)]  # as recorded, not extended
    world2 = created()
    world2.carry_out(world2.decide(DUE, SECOND), until="secret")
    plan = world2.decide(DUE + 3 * GRACE, THIRD)  # back after the recorded deadline: retired at once
    assert plan.step == "retire"
    assert secrets_pushed(plan) == [("second01", None)]
    assert "previous-client-secret" not in decoded(plan)


def test_a_crash_after_the_deadline_push_only_writes_the_status() -> None:
    world = created()
    world.carry_out(world.decide(DUE, SECOND), until="deadline")
    plan = world.decide(DUE + timedelta(seconds=5), THIRD)
    assert plan.secret is None
    assert plan.status is not None
    assert [(s.id, s.not_after) for s in status_of(plan).active_secrets] == [
        ("second01", None),
        ("first001", DUE + GRACE),
    ]

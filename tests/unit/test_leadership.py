"""Leader-election timing rules (credward.domain.leadership) and their settings, with a moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from credward.domain.leadership import ACQUIRE_JITTER, LeaseTiming
from credward.errors import InvalidSpec, SettingsError
from credward.operator.settings import leader_election_from_env

pytestmark = pytest.mark.unit

S = timedelta(seconds=1)


def test_defaults_are_client_go_scaled_and_leave_a_margin() -> None:
    t = LeaseTiming()
    assert (t.lease_duration, t.renew_deadline, t.retry_period) == (10 * S, 7 * S, 2 * S)
    # A leader that cannot renew stops 3s before anyone may take over.
    assert t.lease_duration - t.renew_deadline == 3 * S
    assert t.takeover_within == 10 * S + 2 * 2 * S * (1 + ACQUIRE_JITTER)


def test_leader_loses_exactly_at_the_renew_deadline() -> None:
    t = LeaseTiming()
    renewed = 100.0
    assert t.renew_budget(renewed, 100.0) == 7.0
    assert t.renew_budget(renewed, 105.5) == 1.5
    assert not t.lost(renewed, 106.9)
    assert t.lost(renewed, 107.0)
    assert t.lost(renewed, 200.0)


def test_standby_waits_are_spread_but_bounded() -> None:
    t = LeaseTiming()
    assert t.acquire_wait(0.0) == 2.0
    assert t.acquire_wait(0.999) == pytest.approx(2.0 * (1 + ACQUIRE_JITTER * 0.999))
    assert t.acquire_wait(5.0) == 2.0 * (1 + ACQUIRE_JITTER)  # out-of-range input is clamped


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "why"),
    [
        (7, 7, 2, "longer than the renew deadline"),
        (10, 12, 2, "longer than the renew deadline"),
        (10, 2, 2, "more than one retry period"),
        (10, 7, 0, "at least 1s"),
        (10.5, 7, 2, "whole seconds"),
    ],
)
def test_inconsistent_timings_are_refused(lease: float, renew: float, retry: float, why: str) -> None:
    with pytest.raises(InvalidSpec, match=why):
        LeaseTiming(lease * S, renew * S, retry * S)


def test_off_by_default() -> None:
    assert leader_election_from_env({}) is None
    assert leader_election_from_env({"CREDWARD_LEADER_ELECTION": "false"}) is None


def test_settings_from_the_agreed_variables() -> None:
    le = leader_election_from_env(
        {
            "CREDWARD_LEADER_ELECTION": "true",
            "CREDWARD_POD_NAMESPACE": "credward",
            "CREDWARD_POD_NAME": "credward-operator-7d9f-abcde",
            "CREDWARD_LEADER_ELECTION_LEASE": "credward-ha",
            "CREDWARD_LEADER_ELECTION_LEASE_DURATION": "20s",
            "CREDWARD_LEADER_ELECTION_RENEW_DEADLINE": "15s",
            "CREDWARD_LEADER_ELECTION_RETRY_PERIOD": "3s",
        }
    )
    assert le is not None
    assert (le.namespace, le.identity, le.lease) == ("credward", "credward-operator-7d9f-abcde", "credward-ha")
    assert le.timing == LeaseTiming(20 * S, 15 * S, 3 * S)


def test_without_a_pod_name_two_processes_get_different_identities() -> None:
    env = {"CREDWARD_LEADER_ELECTION": "true", "CREDWARD_POD_NAMESPACE": "credward"}
    a, b = leader_election_from_env(env), leader_election_from_env(env)
    assert a is not None
    assert b is not None
    assert a.identity != b.identity
    assert a.lease == "credward-operator"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CREDWARD_LEADER_ELECTION": "yes"}, "CREDWARD_LEADER_ELECTION"),
        ({"CREDWARD_LEADER_ELECTION": "true"}, "CREDWARD_POD_NAMESPACE"),
        (
            {
                "CREDWARD_LEADER_ELECTION": "true",
                "CREDWARD_POD_NAMESPACE": "c",
                "CREDWARD_LEADER_ELECTION_LEASE": "No!",
            },
            "CREDWARD_LEADER_ELECTION_LEASE",
        ),
        (
            {
                "CREDWARD_LEADER_ELECTION": "true",
                "CREDWARD_POD_NAMESPACE": "c",
                "CREDWARD_LEADER_ELECTION_RETRY_PERIOD": "soon",
            },
            "CREDWARD_LEADER_ELECTION_RETRY_PERIOD",
        ),
        (
            {
                "CREDWARD_LEADER_ELECTION": "true",
                "CREDWARD_POD_NAMESPACE": "c",
                "CREDWARD_LEADER_ELECTION_RENEW_DEADLINE": "30s",
            },
            "longer than the renew deadline",
        ),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        leader_election_from_env(env)

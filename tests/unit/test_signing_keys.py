"""The signing-key schedule: each rule with a moved clock, and whole lifecycles replayed from what is stored."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from credward.domain.jwk import SigningAlgorithm, generate_key, key_to_pem, kid_of
from credward.domain.signing_keys import (
    ANNOTATION_PREVIOUS_MAX_TTL,
    KeyPolicy,
    KeysState,
    Slot,
    Step,
    apply,
    decide,
    initial,
    read_keys,
    retire_at,
)
from credward.errors import KeyLoadError

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
# period 14s, JWKS cache 2s, propagation 6s, skew 1s: promote 8s after publishing, keep previous 6+5+1 = 12s.
POLICY = KeyPolicy(period=14 * S, jwks_cache=2 * S, propagation=6 * S, clock_skew=S)
TTL = 5 * S
LONG = KeyPolicy(period=100 * S, jwks_cache=2 * S, propagation=6 * S, clock_skew=S)  # no publication soon


def new_key(alg: SigningAlgorithm = SigningAlgorithm.ES256) -> tuple[bytes, str]:
    key = generate_key(alg)
    return key_to_pem(key), kid_of(key)


def stored(state: KeysState) -> KeysState:
    """What a restarted operator reads back from the Secret."""
    return read_keys(state.data(), state.annotations(), SigningAlgorithm.ES256)


def test_a_new_secret_publishes_its_next_key_period_minus_promote_after_later() -> None:
    state = initial(*new_key(), T0)
    decision = decide(state, T0, POLICY, TTL)
    assert decision.step is None
    assert decision.wake_at == T0 + 6 * S  # 14 - (2 + 6)
    assert decide(state, T0 + 6 * S, POLICY, TTL).step is Step.PUBLISH


def test_next_is_promoted_only_after_jwks_cache_plus_propagation() -> None:
    state = apply(initial(*new_key(), T0), Step.PUBLISH, T0 + 6 * S, new_key=new_key())
    early = decide(state, T0 + 13.9 * S, POLICY, TTL)
    assert early.step is None
    assert early.wake_at == T0 + 14 * S
    assert decide(state, T0 + 14 * S, POLICY, TTL).step is Step.PROMOTE


def test_promotion_moves_current_to_previous_and_records_the_max_token_ttl() -> None:
    first = initial(*new_key(), T0)
    published = apply(first, Step.PUBLISH, T0 + 6 * S, new_key=new_key())
    promoted = apply(published, Step.PROMOTE, T0 + 14 * S, max_token_ttl=TTL)
    assert published.next is not None
    assert promoted.current.kid == published.next.kid
    assert promoted.previous is not None
    assert promoted.previous.kid == first.current.kid
    assert promoted.previous.since == T0 + 14 * S
    assert promoted.next is None
    assert promoted.annotations()[ANNOTATION_PREVIOUS_MAX_TTL] == "5"


def test_previous_is_kept_for_propagation_plus_max_ttl_plus_skew() -> None:
    state = apply(
        apply(initial(*new_key(), T0), Step.PUBLISH, T0, new_key=new_key()), Step.PROMOTE, T0, max_token_ttl=TTL
    )
    assert retire_at(state, LONG, TTL) == T0 + 12 * S
    assert decide(state, T0 + 11.9 * S, LONG, TTL).step is None
    assert decide(state, T0 + 12 * S, LONG, TTL).step is Step.RETIRE


def test_a_lowered_max_ttl_never_shortens_the_wait_and_a_raised_one_lengthens_it() -> None:
    state = apply(
        apply(initial(*new_key(), T0), Step.PUBLISH, T0, new_key=new_key()), Step.PROMOTE, T0, max_token_ttl=TTL
    )
    assert retire_at(state, POLICY, S) == T0 + 12 * S  # the TTL recorded at the promotion wins
    assert retire_at(state, POLICY, 60 * S) == T0 + 67 * S  # tokens may have been signed for longer meanwhile


def test_without_any_known_max_ttl_previous_stays() -> None:
    state = apply(apply(initial(*new_key(), T0), Step.PUBLISH, T0, new_key=new_key()), Step.PROMOTE, T0)
    decision = decide(state, T0 + 50 * S, LONG, None)
    assert decision.step is None
    assert "max token TTL" in decision.reason
    assert decide(state, T0 + 50 * S, LONG, TTL).step is Step.RETIRE


def test_promotion_waits_for_a_previous_key_that_is_still_needed() -> None:
    slow = KeyPolicy(period=10 * S, jwks_cache=2 * S, propagation=6 * S, clock_skew=S)  # keeps previous 12s
    state = apply(initial(*new_key(), T0), Step.PUBLISH, T0, new_key=new_key())
    state = apply(state, Step.PROMOTE, T0 + 8 * S, max_token_ttl=TTL)  # previous until T0 + 20s
    state = apply(state, Step.PUBLISH, T0 + 10 * S, new_key=new_key())  # promotable from T0 + 18s
    waiting = decide(state, T0 + 18 * S, slow, TTL)
    assert waiting.step is None
    assert waiting.wake_at == T0 + 20 * S
    assert decide(state, T0 + 20 * S, slow, TTL).step is Step.RETIRE
    assert decide(apply(state, Step.RETIRE, T0 + 20 * S), T0 + 20 * S, slow, TTL).step is Step.PROMOTE


def test_keys_no_annotation_names_are_adopted_as_of_now() -> None:
    pem, _ = new_key()
    state = read_keys({"current.pem": pem, "previous.pem": new_key()[0]}, {}, SigningAlgorithm.ES256)
    assert state.current.since is None
    decision = decide(state, T0, POLICY, TTL)
    assert decision.step is Step.ADOPT
    adopted = stored(apply(state, Step.ADOPT, T0, max_token_ttl=TTL))
    assert adopted.current.since == T0
    assert adopted.previous is not None
    assert adopted.previous.since == T0
    assert adopted.previous_max_ttl == TTL
    assert decide(adopted, T0, POLICY, TTL).step is None  # the previous key waits its full time


def test_an_annotation_naming_another_key_reads_as_unknown() -> None:
    state = initial(*new_key(), T0)
    replaced = read_keys({"current.pem": new_key()[0]}, state.annotations(), SigningAlgorithm.ES256)
    assert replaced.current.since is None


def test_malformed_secrets_are_refused_by_file_name_without_the_value() -> None:
    with pytest.raises(KeyLoadError, match=r"no current\.pem"):
        read_keys({"next.pem": new_key()[0]}, {}, SigningAlgorithm.ES256)
    garbage = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyLoadError, match=r"next\.pem") as err:
        read_keys({"current.pem": new_key()[0], "next.pem": garbage}, {}, SigningAlgorithm.ES256)
    assert "not a key" not in str(err.value)
    with pytest.raises(KeyLoadError, match="EdDSA key but ES256"):
        read_keys({"current.pem": new_key(SigningAlgorithm.EDDSA)[0]}, {}, SigningAlgorithm.ES256)


def test_times_keep_sub_second_precision() -> None:
    published = T0 + timedelta(seconds=6, microseconds=900_000)
    state = stored(apply(initial(*new_key(), T0), Step.PUBLISH, published, new_key=new_key()))
    assert state.next is not None
    assert state.next.since == published


def test_a_lifecycle_replayed_from_the_secret_keeps_every_promise() -> None:
    """A tick every 0.25 s, each decision taken from the Secret as stored (a restart before every tick)."""
    state = stored(initial(*new_key(), T0))
    published: dict[str, datetime] = {state.current.kid: T0 - timedelta(days=1)}
    promoted: dict[str, datetime] = {state.current.kid: T0}
    demoted: dict[str, datetime] = {}
    removed: dict[str, datetime] = {}
    now = T0
    while now < T0 + timedelta(seconds=80):
        decision = decide(state, now, POLICY, TTL)
        if decision.step is not None:
            before = state
            state = stored(apply(state, decision.step, now, new_key=new_key(), max_token_ttl=TTL))
            if decision.step is Step.PUBLISH:
                assert state.next is not None
                published[state.next.kid] = now
            elif decision.step is Step.PROMOTE:
                promoted[state.current.kid] = now
                demoted[before.current.kid] = now
            elif decision.step is Step.RETIRE:
                assert before.previous is not None
                removed[before.previous.kid] = now
            assert decide(state, now, POLICY, TTL).step is None  # one step per moment: none is repeated
        now += timedelta(seconds=0.25)
    assert len(promoted) >= 6  # T0, then every 14 s
    for kid, at in promoted.items():
        assert at - published[kid] >= POLICY.promote_after
    for kid, at in removed.items():
        assert at - demoted[kid] >= POLICY.keep_previous(TTL)
    times = sorted(promoted.values())
    assert all(b - a == POLICY.period for a, b in itertools.pairwise(times))
    assert set(state.data()) <= {s.file for s in Slot}

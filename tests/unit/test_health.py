"""kstatus_conditions(): Reconciling and Stalled derived from the summary condition, and decide() using it.

These check credward's own shapes; what kstatus itself makes of them is
tests/integration/test_kstatus.py, run through the real kstatus.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.test_credential_decide import held_after, observe, run, status_of

from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain import credential
from credward.domain.conditions import ConditionSpec
from credward.domain.credential import ObservedSecret
from credward.domain.health import NEEDS_A_PERSON, RECONCILING, STALLED, kstatus_conditions


def by_type(conditions: list[ConditionSpec]) -> dict[str, ConditionSpec]:
    return {c.type: c for c in conditions}


def test_true_summary_is_neither_reconciling_nor_stalled() -> None:
    out = by_type(kstatus_conditions([ConditionSpec("Ready", "True", "SecretReady", "ok")]))
    assert (out[RECONCILING].status, out[STALLED].status) == ("False", "False")
    assert out[RECONCILING].reason == out[STALLED].reason == "SecretReady"


def test_a_reason_that_needs_a_person_stalls_with_what_to_do() -> None:
    ready = ConditionSpec("Ready", "False", "Revoked", "The account is revoked (spec.revoked is true)")
    out = by_type(kstatus_conditions([ready]))
    assert out[STALLED].status == "True"
    assert out[STALLED].reason == "Revoked"
    assert out[STALLED].message == (
        "The account is revoked (spec.revoked is true). "
        "Set spec.revoked to false to unblock the account, or delete the credential"
    )
    assert out[RECONCILING].status == "False"


def test_any_other_false_or_unknown_summary_is_reconciling_with_its_reason() -> None:
    for status in ("False", "Unknown"):
        out = by_type(kstatus_conditions([ConditionSpec("Ready", status, "Registering", "Telling the service")]))
        assert out[RECONCILING] == ConditionSpec(RECONCILING, "True", "Registering", "Telling the service")
        assert out[STALLED].status == "False"


def test_no_summary_yet_is_reconciling() -> None:
    out = by_type(kstatus_conditions([ConditionSpec("Expired", "False", "NoLifetime", "")]))
    assert out[RECONCILING].status == "True"
    assert out[RECONCILING].reason == "Pending"


def test_rolebinding_summary_is_synced_and_account_not_found_is_progress() -> None:
    waiting = ConditionSpec("Synced", "False", "AccountNotFound", "No credential named builder in this namespace yet")
    out = by_type(kstatus_conditions([waiting], summary="Synced"))
    assert out[RECONCILING].status == "True"
    assert out[RECONCILING].reason == "AccountNotFound"
    synced = by_type(kstatus_conditions([ConditionSpec("Synced", "True", "Synced", "")], summary="Synced"))
    assert synced[RECONCILING].status == synced[STALLED].status == "False"


def test_own_conditions_keep_their_order_and_old_derived_ones_are_replaced() -> None:
    old = [
        ConditionSpec("Ready", "True", "SecretReady", ""),
        ConditionSpec(STALLED, "True", "Revoked", "stale"),
        ConditionSpec("Expired", "False", "NoLifetime", ""),
    ]
    out = kstatus_conditions(old)
    assert [c.type for c in out] == ["Ready", "Expired", RECONCILING, STALLED]
    assert kstatus_conditions(out) == out


@given(
    status=st.sampled_from(["True", "False", "Unknown"]),
    reason=st.sampled_from([*NEEDS_A_PERSON, "SecretReady", "Registering", "ServiceUnavailable"]),
)
def test_never_both_reconciling_and_stalled(status: str, reason: str) -> None:
    out = by_type(kstatus_conditions([ConditionSpec("Ready", status, reason, "m")]))  # type: ignore[arg-type]
    assert not (out[RECONCILING].status == "True" and out[STALLED].status == "True")
    assert (out[RECONCILING].status == "True" or out[STALLED].status == "True") == (status != "True")


def test_the_reasons_that_need_a_person_are_the_credential_reasons() -> None:
    assert set(NEEDS_A_PERSON) >= {
        credential.REASON_SECRET_CONFLICT,
        credential.REASON_EXPIRED,
        credential.REASON_REVOKED,
    }


def conditions_of(s: CredentialSpec, secret: ObservedSecret | None = None) -> dict[str, tuple[str, str]]:
    """The conditions once the service has taken the account (or, with a foreign Secret, at once)."""
    first = run(s, CredentialStatus(), secret)
    if secret is not None:
        assert first.status is not None
        return {c["type"]: (c["status"], c["reason"]) for c in first.status["conditions"]}
    settled = run(s, status_of(first), observe(first), service=held_after(first))
    status = status_of(settled) if settled.status is not None else status_of(first)
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_decide_states_reconciling_and_stalled_for_each_state() -> None:
    ok = conditions_of(CredentialSpec.model_validate({"displayName": "b"}))
    assert ok["Ready"] == ("True", "SecretReady")
    assert ok[RECONCILING] == ok[STALLED] == ("False", "SecretReady")
    revoked = conditions_of(CredentialSpec.model_validate({"displayName": "b", "revoked": True}))
    assert revoked[STALLED] == ("True", "Revoked")
    expired = conditions_of(CredentialSpec.model_validate({"displayName": "b", "lifetime": "30m"}))
    assert expired[STALLED] == ("True", "Expired")
    foreign = ObservedSecret(name="builder-credentials", controller_uids=(), data={}, labels={}, annotations={})
    conflict = conditions_of(CredentialSpec.model_validate({"displayName": "b"}), foreign)
    assert conflict[STALLED] == ("True", "SecretConflict")
    assert conflict[RECONCILING] == ("False", "SecretConflict")

"""decide(): the webhook CA and serving certificate through a whole rollover, on a fake clock."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from credward.domain.webhook_tls import (
    TLSPlan,
    TLSPolicy,
    TLSState,
    decide,
    fingerprint,
    renewal_point,
    split_bundle,
)

T0 = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)
POLICY = TLSPolicy(
    ca_validity=dt.timedelta(hours=30),
    serving_validity=dt.timedelta(hours=9),
    overlap=dt.timedelta(minutes=10),
    dns_names=("credward-webhook.credward.svc",),
    ip_addresses=("127.0.0.1",),
)


def published(state: TLSState) -> frozenset[str]:
    return frozenset(fingerprint(c) for c in split_bundle(state.bundle))


def step(state: TLSState | None, now: dt.datetime, trust: frozenset[str] | None = None) -> TLSPlan:
    return decide(state, now, POLICY, trust if trust is not None else (published(state) if state else frozenset()))


def test_fresh_state_has_a_ca_and_a_serving_certificate_for_the_names() -> None:
    plan = step(None, T0)
    assert plan.changed
    serving = plan.state.serving.certificate
    serving.verify_directly_issued_by(plan.state.signer.certificate)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["credward-webhook.credward.svc"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert split_bundle(plan.state.bundle) == [plan.state.signer.cert]


def test_steady_state_changes_nothing_and_wakes_at_the_serving_renewal_point() -> None:
    state = step(None, T0).state
    plan = step(state, T0 + dt.timedelta(hours=1))
    assert not plan.changed
    assert plan.wake_at == renewal_point(state.serving.certificate) == T0 + dt.timedelta(hours=6)


def test_state_survives_the_secret_round_trip() -> None:
    state = step(None, T0).state
    data = state.secret_data()
    again = TLSState.from_secret(data, {"credward.io/trust-changed-at": "2026-11-22T12:00:00Z"})
    assert again is not None
    assert again.secret_data() == data
    assert TLSState.from_secret({**data, "tls.crt": b"garbage"}, {}) is None
    assert TLSState.from_secret({}, {}) is None


def test_serving_certificate_is_reissued_by_the_same_ca_at_two_thirds() -> None:
    state = step(None, T0).state
    plan = step(state, T0 + dt.timedelta(hours=6))
    assert plan.reason == "the serving certificate reached its renewal point"
    assert plan.state.signer == state.signer
    assert plan.state.bundle == state.bundle
    assert plan.state.serving != state.serving


def test_other_names_get_a_new_serving_certificate() -> None:
    state = step(None, T0).state
    moved = TLSPolicy(POLICY.ca_validity, POLICY.serving_validity, POLICY.overlap, ("other.svc",), ())
    plan = decide(state, T0, moved, published(state))
    assert plan.reason == "the serving certificate named other hosts"


def test_ca_rollover_never_serves_what_the_published_bundle_does_not_trust() -> None:
    """Walk the clock through a CA renewal; at every step the serving cert's CA is in the bundle already published."""
    state = step(None, T0).state
    trusted = published(state)  # what the API server has
    now = T0
    reasons: list[str] = []
    cas = {fingerprint(state.signer.cert)}
    while now < T0 + dt.timedelta(hours=60):
        plan = decide(state, now, POLICY, trusted)
        if plan.changed:
            reasons.append(plan.reason)
            issuer = plan.state.serving.certificate
            assert any(fingerprint(c) in trusted and _issued(issuer, c) for c in split_bundle(plan.state.bundle)), (
                plan.reason
            )
            state = plan.state
            cas.add(fingerprint(state.signer.cert))
            # The operator writes the bundle to the configurations right after storing the state.
            trusted = published(state)
            continue
        assert now <= state.serving.certificate.not_valid_after_utc
        now += dt.timedelta(minutes=5)
    assert "a next CA joined the trust bundle" in reasons
    assert "the next CA now signs the serving certificate" in reasons
    assert "the previous CA left the bundle" in reasons
    assert len(cas) >= 2


def _issued(cert: x509.Certificate, ca_pem: bytes) -> bool:
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except Exception:
        return False
    return True


def test_promotion_waits_for_the_overlap_and_for_the_bundle_to_be_published() -> None:
    first = step(None, T0).state
    at_renewal = renewal_point(first.signer.certificate)
    state = step(first, at_renewal - dt.timedelta(minutes=1)).state  # a serving certificate issued just before
    rolled = step(state, at_renewal)
    assert rolled.reason == "a next CA joined the trust bundle"
    assert len(split_bundle(rolled.state.bundle)) == 2
    assert rolled.state.serving == state.serving  # nothing the new CA signed is served yet
    too_soon = step(rolled.state, at_renewal + dt.timedelta(minutes=5))
    assert not too_soon.changed
    assert too_soon.wake_at == at_renewal + POLICY.overlap
    later = at_renewal + dt.timedelta(minutes=11)
    unpublished = step(rolled.state, later, trust=published(state))  # the configurations still hold only the old CA
    assert not unpublished.changed
    promoted = step(rolled.state, later)
    assert promoted.reason == "the next CA now signs the serving certificate"
    assert promoted.state.signer == rolled.state.next_signer
    assert promoted.state.previous_signer == state.signer.cert
    retired = step(promoted.state, later + dt.timedelta(minutes=11))
    assert retired.reason == "the previous CA left the bundle"
    assert split_bundle(retired.state.bundle) == [promoted.state.signer.cert]


def test_an_expired_ca_is_replaced_outright() -> None:
    state = step(None, T0).state
    plan = step(state, T0 + dt.timedelta(hours=31))
    assert plan.reason == "the CA had expired"
    assert plan.state.signer != state.signer


def test_serving_certificate_never_outlives_its_ca() -> None:
    short_ca = TLSPolicy(dt.timedelta(hours=2), dt.timedelta(hours=9), POLICY.overlap, (), ("127.0.0.1",))
    state = decide(None, T0, short_ca, frozenset()).state
    assert state.serving.certificate.not_valid_after_utc == state.signer.certificate.not_valid_after_utc

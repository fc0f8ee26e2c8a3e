"""decide(): every branch of the credential → Secret decision, with a fixed clock and generators."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from credward.api import ANNOTATION_CLIENT_ID, ANNOTATION_SECRET_ID, LABEL_CREDENTIAL, LABEL_MANAGED_BY
from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain.credential import (
    ANNOTATION_SECRET_FINGERPRINT,
    CredentialRef,
    Endpoints,
    Generators,
    ObservedSecret,
    Plan,
    decide,
)
from credward.domain.secrets import fingerprint

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ENDPOINTS = Endpoints(issuer="https://auth.example.org", token_url="https://auth.example.org/oauth2/token")
REF = CredentialRef(namespace="ci", name="builder", uid="uid-1", generation=3, created=NOW - timedelta(days=1))
MANAGER = "credward-operator"


def gens() -> Generators:
    counter = itertools.count(1)
    return Generators(
        client_id=lambda: "11111111-2222-3333-4444-555555555555",
        client_secret=lambda: f"cws_generated-{next(counter)}",
        secret_id=lambda: "abcd0001",
    )


def spec(**extra: Any) -> CredentialSpec:
    return CredentialSpec.model_validate({"displayName": "Builder", **extra})


def run(s: CredentialSpec, st: CredentialStatus, secret: ObservedSecret | None, now: datetime = NOW, **kw: Any) -> Plan:
    return decide(REF, s, st, secret, ENDPOINTS, now, gen=gens(), **kw)


def observe(plan: Plan, *, uid: str = REF.uid) -> ObservedSecret:
    """The Secret as the API server would return it after applying the plan's manifest."""
    assert plan.secret is not None
    manifest = {**plan.secret}
    manifest["metadata"] = {**plan.secret["metadata"]}
    manifest["metadata"]["ownerReferences"] = [{**plan.secret["metadata"]["ownerReferences"][0], "uid": uid}]
    manifest["metadata"]["managedFields"] = [
        {
            "manager": MANAGER,
            "operation": "Apply",
            "fieldsV1": {
                "f:metadata": {
                    "f:labels": {f"f:{k}": {} for k in manifest["metadata"]["labels"]},
                    "f:annotations": {f"f:{k}": {} for k in manifest["metadata"]["annotations"]},
                }
            },
        }
    ]
    return ObservedSecret.from_manifest(manifest, MANAGER)


def status_of(plan: Plan) -> CredentialStatus:
    assert plan.status is not None
    return CredentialStatus.model_validate(plan.status)


def decoded(plan: Plan) -> dict[str, str]:
    assert plan.secret is not None
    return {k: base64.b64decode(v).decode() for k, v in plan.secret["data"].items()}


def test_create_makes_secret_status_and_event() -> None:
    plan = run(spec(), CredentialStatus(), None)
    data = decoded(plan)
    assert data["client-id"] == "11111111-2222-3333-4444-555555555555"
    assert data["client-secret"] == "cws_generated-1"
    assert data["token-url"] == ENDPOINTS.token_url
    assert data["issuer"] == ENDPOINTS.issuer
    meta = plan.secret["metadata"]  # type: ignore[index]
    assert meta["name"] == "builder-credentials"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"][LABEL_MANAGED_BY] == "credward"
    assert meta["labels"][LABEL_CREDENTIAL] == "builder"
    assert meta["annotations"][ANNOTATION_SECRET_FINGERPRINT] == fingerprint("cws_generated-1")
    st = status_of(plan)
    assert st.client_id == data["client-id"]
    assert st.identity == f"{data['client-id']}@clients.auth.example.org"
    assert st.secret_name == "builder-credentials"
    assert st.observed_generation == 3
    assert [s.id for s in st.active_secrets] == ["abcd0001"]
    assert st.next_rotation_time == NOW + timedelta(hours=720)
    ready = next(c for c in st.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "SecretReady")
    assert [e.reason for e in plan.events] == ["SecretCreated"]


def test_secret_value_never_in_status_or_events() -> None:
    plan = run(spec(), CredentialStatus(), None)
    assert "cws_generated-1" not in repr(plan.status)
    assert all("cws_generated-1" not in e.message for e in plan.events)


def test_up_to_date_makes_no_writes() -> None:
    first = run(spec(), CredentialStatus(), None)
    later = run(spec(), status_of(first), observe(first), now=NOW + timedelta(hours=1))
    assert later.writes == 0
    assert later.events == ()


def test_secret_name_and_template_applied() -> None:
    s = spec(secretName="custom", secretTemplate={"labels": {"team": "a"}, "annotations": {"note": "x"}})
    plan = run(s, CredentialStatus(), None)
    meta = plan.secret["metadata"]  # type: ignore[index]
    assert meta["name"] == "custom"
    assert meta["labels"]["team"] == "a"
    assert meta["annotations"]["note"] == "x"


def test_template_key_removed_is_noticed() -> None:
    s = spec(secretTemplate={"labels": {"team": "a"}})
    first = run(s, CredentialStatus(), None)
    plan = run(spec(), status_of(first), observe(first))
    assert plan.secret is not None
    assert "team" not in plan.secret["metadata"]["labels"]
    assert decoded(plan)["client-secret"] == "cws_generated-1"  # kept, not rotated


def test_deleted_secret_is_recreated_with_same_client_id() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(), status_of(first), None)
    assert decoded(plan)["client-id"] == status_of(first).client_id
    assert [e.reason for e in plan.events] == ["SecretRecreated"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("client-id", "someone-else"), ("token-url", "http://evil.example/token"), ("issuer", "http://x")],
)
def test_tampered_plain_keys_are_restored_without_rotation(key: str, value: str) -> None:
    first = run(spec(), CredentialStatus(), None)
    seen = observe(first)
    data = dict(seen.data)
    data[key] = value
    tampered = ObservedSecret(
        name=seen.name,
        controller_uids=seen.controller_uids,
        data=data,
        labels=seen.labels,
        annotations=seen.annotations,
        managed_labels=seen.managed_labels,
        managed_annotations=seen.managed_annotations,
    )
    plan = run(spec(), status_of(first), tampered)
    assert decoded(plan) == decoded(first)
    assert [e.reason for e in plan.events] == ["SecretRepaired"]


def test_tampered_client_secret_gets_a_new_secret() -> None:
    first = run(spec(), CredentialStatus(), None)
    seen = observe(first)
    tampered = ObservedSecret(
        name=seen.name,
        controller_uids=seen.controller_uids,
        data={**seen.data, "client-secret": "guessable"},
        labels=seen.labels,
        annotations=seen.annotations,
    )
    plan = run(spec(), status_of(first), tampered)
    assert decoded(plan)["client-secret"] == "cws_generated-1"  # fresh generator in this run
    assert decoded(plan)["client-secret"] != "guessable"
    assert [e.reason for e in plan.events] == ["SecretTampered"]


def test_foreign_secret_is_a_conflict_and_never_written() -> None:
    first = run(spec(), CredentialStatus(), None)
    foreign = observe(first, uid="someone-else")
    plan = run(spec(), CredentialStatus(), foreign)
    assert plan.secret is None
    ready = next(c for c in status_of(plan).conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "SecretConflict")
    assert "never overwrites" in ready.message
    assert [e.reason for e in plan.events] == ["SecretConflict"]
    again = run(spec(), status_of(plan), foreign)
    assert again.writes == 0
    assert again.events == ()


def test_status_lost_is_rebuilt_from_secret_annotations() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(), CredentialStatus(), observe(first))
    assert plan.secret is None
    st = status_of(plan)
    assert st.client_id == observe(first).annotations[ANNOTATION_CLIENT_ID]
    assert st.active_secrets[0].id == observe(first).annotations[ANNOTATION_SECRET_ID]


def test_lifetime_expiry_sets_conditions_and_wakes_at_expiry() -> None:
    s = spec(lifetime="48h")
    plan = run(s, CredentialStatus(), None)
    st = status_of(plan)
    assert st.expires_at == REF.created + timedelta(hours=48)
    assert plan.requeue_after == timedelta(minutes=10)
    near = run(s, st, observe(plan), now=REF.created + timedelta(hours=48) - timedelta(seconds=30))
    assert near.requeue_after == timedelta(seconds=30)
    expired = run(s, st, observe(plan), now=REF.created + timedelta(hours=49))
    conds = {c.type: c for c in status_of(expired).conditions}
    assert conds["Expired"].status == "True"
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "Expired")
    assert [e.reason for e in expired.events] == ["Expired"]


def test_revoked_is_not_ready() -> None:
    plan = run(spec(revoked=True), CredentialStatus(), None)
    conds = {c.type: c for c in status_of(plan).conditions}
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "Revoked")
    assert conds["Revoked"].status == "True"


def test_transition_time_kept_when_status_unchanged() -> None:
    first = run(spec(), CredentialStatus(), None)
    st = status_of(first)
    later = run(spec(description="changed"), st, observe(first), now=NOW + timedelta(hours=5))
    assert later.status is None  # generation unchanged in REF, nothing differs
    assert all(c.last_transition_time == NOW for c in st.conditions)

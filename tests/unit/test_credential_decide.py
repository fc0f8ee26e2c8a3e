"""decide(): every branch of the credential -> Secret + account decision, with a fixed clock and candidate."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from credward.api import ANNOTATION_CLIENT_ID, ANNOTATION_SECRET_ID, LABEL_CREDENTIAL, LABEL_MANAGED_BY
from credward.api.admin import AccountView, RoleMapping, ServiceInfo
from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain.credential import (
    ANNOTATION_SECRET_FINGERPRINT,
    Candidate,
    CredentialInput,
    CredentialRef,
    Endpoints,
    ObservedSecret,
    Plan,
    ServiceHolds,
    ServiceRefusal,
    ServiceState,
    ServiceUnreachable,
    cleanup_action,
    decide,
)
from credward.domain.rolebinding import ObservedBinding, SyncOutcome, orphan_updates
from credward.domain.secrets import fingerprint, hash_key_id, hash_secret

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
ENDPOINTS = Endpoints(issuer="https://auth.example.org", token_url="https://auth.example.org/oauth2/token")
REF = CredentialRef(namespace="ci", name="builder", uid="uid-1", generation=3, created=NOW - timedelta(days=1))
MANAGER = "credward-operator"


HASH_KEY = b"k" * 32
INFO = ServiceInfo.model_validate(
    {"storeId": "store-1", "accounts": 0, "hashKeyId": hash_key_id(HASH_KEY), "maxTokenTTLSeconds": 3600}
)


def holds(view: AccountView | None = None, confirmed: str | None = None) -> ServiceHolds:
    return ServiceHolds(INFO, view, confirmed)


def spec(**extra: Any) -> CredentialSpec:
    return CredentialSpec.model_validate({"displayName": "Builder", **extra})


def run(
    s: CredentialSpec,
    st: CredentialStatus,
    secret: ObservedSecret | None,
    now: datetime = NOW,
    *,
    service: ServiceState | None = None,
    cand: Candidate | None = None,
    **kw: Any,
) -> Plan:
    """One decision; by default the service is reachable and holds nothing yet."""
    inp = CredentialInput(
        ref=REF,
        spec=s,
        status=st,
        secret=secret,
        bindings=(),
        service=service or holds(),
        hash_key=HASH_KEY,
        candidate=cand or Candidate("11111111-2222-3333-4444-555555555555", "cws_generated-1", "abcd0001"),
        endpoints=ENDPOINTS,
    )
    return decide(inp, now, **kw)


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


def held_after(plan: Plan) -> ServiceHolds:
    """What the service holds once ``plan``'s account was pushed and accepted."""
    assert plan.account is not None
    doc = plan.account.model_dump(by_alias=True, mode="json")
    view = AccountView.model_validate(
        {
            **doc,
            "clientId": plan.client_id,
            "effectiveTokenTTLSeconds": min(doc["tokenTTLSeconds"], INFO.max_token_ttl_seconds),
            "secrets": [{"id": s["id"]} for s in doc["secrets"]],
        }
    )
    return holds(view, plan.confirm)


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
    assert [e.reason for e in plan.events] == ["SecretCreated", "Registered"]
    assert plan.account is not None


def test_secret_value_never_in_status_or_events() -> None:
    plan = run(spec(), CredentialStatus(), None)
    assert "cws_generated-1" not in repr(plan.status)
    assert all("cws_generated-1" not in e.message for e in plan.events)


def test_up_to_date_makes_no_writes() -> None:
    first = run(spec(), CredentialStatus(), None)
    later = run(spec(), status_of(first), observe(first), now=NOW + timedelta(hours=1), service=held_after(first))
    assert later.writes == 0
    assert later.account is None
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
    plan = run(spec(), status_of(first), None, cand=Candidate("other-id", "cws_generated-2", "abcd0002"))
    assert decoded(plan)["client-id"] == status_of(first).client_id
    assert decoded(plan)["client-secret"] == "cws_generated-2"
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
    plan = run(spec(), status_of(first), tampered, cand=Candidate("x", "cws_generated-2", "abcd0002"))
    assert decoded(plan)["client-secret"] == "cws_generated-2"  # the fresh candidate of this run
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
    later = run(
        spec(description="changed"), st, observe(first), now=NOW + timedelta(hours=5), service=held_after(first)
    )
    assert later.status is None  # generation unchanged in REF, nothing differs
    # The times are those of the *decision's* output: a status change five hours later keeps NOW where the
    # status of a condition did not change, and moves it where it did.
    revoked = run(spec(revoked=True), st, observe(first), now=NOW + timedelta(hours=5), service=held_after(first))
    conds = {c.type: c for c in status_of(revoked).conditions}
    assert conds["Expired"].last_transition_time == NOW
    assert conds["Revoked"].last_transition_time == NOW + timedelta(hours=5)
    assert conds["Ready"].last_transition_time == NOW + timedelta(hours=5)


# -- registration with the security service --------------------------------------------------------------


def cond(plan: Plan, type_: str) -> tuple[str, str, str]:
    c = next(c for c in status_of(plan).conditions if c.type == type_)
    return c.status, c.reason, c.message


def test_new_secret_is_pushed_as_its_hash_never_its_value() -> None:
    plan = run(spec(audiences=["https://a"], groups=["/g"], tokenTTL="2m"), CredentialStatus(), None)
    assert plan.account is not None
    body = plan.account.model_dump_json(by_alias=True)
    assert "cws_generated-1" not in body
    assert plan.account.secrets[0].hash == hash_secret(HASH_KEY, "cws_generated-1")
    assert plan.account.secrets[0].id == "abcd0001"
    assert (plan.account.audiences, plan.account.groups, plan.account.token_ttl_seconds) == (
        ("https://a",),
        ("/g",),
        120,
    )
    assert plan.account.namespace == "ci"
    assert plan.account.status == "active"
    assert cond(plan, "Registered")[:2] == ("True", "Registered")


def test_finalizer_is_added_once() -> None:
    inp = CredentialInput(
        ref=REF,
        spec=spec(),
        status=CredentialStatus(),
        secret=None,
        bindings=(),
        service=holds(),
        hash_key=HASH_KEY,
        candidate=Candidate("c", "cws_generated-1", "abcd0001"),
        endpoints=ENDPOINTS,
        has_finalizer=False,
    )
    assert decide(inp, NOW).add_finalizer
    assert not decide(replace(inp, has_finalizer=True), NOW).add_finalizer


def test_unreachable_service_gets_no_new_secret_and_says_why() -> None:
    plan = run(spec(), CredentialStatus(), None, service=ServiceUnreachable("GET /v1/admin/info: ConnectError"))
    assert plan.secret is None
    assert plan.account is None
    assert plan.retry
    assert cond(plan, "Registered")[:2] == ("False", "ServiceUnreachable")
    assert "ConnectError" in cond(plan, "Registered")[2]
    assert cond(plan, "Ready")[:2] == ("False", "ServiceUnreachable")
    assert status_of(plan).active_secrets == ()  # nothing was written, so nothing is recorded
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "ServiceUnreachable")]
    again = run(spec(), status_of(plan), None, service=ServiceUnreachable("GET /v1/admin/info: ConnectError"))
    assert again.events == ()  # told once, on the transition
    assert again.status is None


def test_unreachable_service_keeps_and_repairs_an_existing_secret() -> None:
    first = run(spec(secretTemplate={"labels": {"a": "1"}}), CredentialStatus(), None)
    plan = run(spec(), status_of(first), observe(first), service=ServiceUnreachable("down"))
    assert plan.secret is not None  # the label removal is a repair: the value is the registered one
    assert decoded(plan)["client-secret"] == "cws_generated-1"
    assert cond(plan, "Ready")[:2] == ("False", "ServiceUnreachable")


def test_refused_account_carries_the_services_message() -> None:
    plan = run(spec(), CredentialStatus(), None, service=ServiceRefusal("HTTP 400: groups.0: bad group"))
    assert cond(plan, "Registered")[:2] == ("False", "Refused")
    assert "groups.0: bad group" in cond(plan, "Registered")[2]
    assert plan.secret is None
    assert plan.retry


def test_hash_key_mismatch_pushes_nothing() -> None:
    other = INFO.model_copy(update={"hash_key_id": "0000000000000000"})
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(), status_of(first), observe(first), service=ServiceHolds(other, None))
    assert plan.account is None
    assert cond(plan, "Registered")[:2] == ("False", "HashKeyMismatch")
    assert cond(plan, "Ready")[0] == "False"


def test_empty_store_gets_the_existing_secret_again_without_touching_the_secret() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(), status_of(first), observe(first), service=holds(None))
    assert plan.secret is None
    assert plan.account is not None
    assert plan.account.secrets[0].hash == hash_secret(HASH_KEY, "cws_generated-1")
    assert plan.account.secrets[0].id == status_of(first).active_secrets[0].id


def test_unconfirmed_push_is_repeated_even_if_the_view_looks_equal() -> None:
    """The view hides hashes: after a restart (or a new store or key) the account is pushed once more."""
    first = run(spec(), CredentialStatus(), None)
    seen = held_after(first)
    assert run(spec(), status_of(first), observe(first), service=seen).account is None
    assert run(spec(), status_of(first), observe(first), service=replace(seen, confirmed=None)).account is not None
    new_store = replace(seen, info=INFO.model_copy(update={"store_id": "store-2"}))
    assert run(spec(), status_of(first), observe(first), service=new_store).account is not None


def test_view_that_differs_is_pushed_again() -> None:
    first = run(spec(), CredentialStatus(), None)
    seen = held_after(first)
    assert seen.account is not None
    changed = replace(seen, account=seen.account.model_copy(update={"groups": ("/someone/else",)}))
    assert run(spec(), status_of(first), observe(first), service=changed).account is not None


def test_token_ttl_above_the_service_maximum_is_reported_once() -> None:
    plan = run(spec(tokenTTL="2h"), CredentialStatus(), None)
    message = cond(plan, "Registered")[2]
    assert "tokens live 3600s, not the 7200s of spec.tokenTTL" in message
    assert "TokenTTLCapped" in [e.reason for e in plan.events]
    later = run(spec(tokenTTL="2h"), status_of(plan), observe(plan), service=held_after(plan))
    assert later.events == ()


def test_revoking_an_active_account_revokes_then_pushes() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(revoked=True), status_of(first), observe(first), service=held_after(first))
    assert plan.revoke
    assert plan.account is not None
    assert plan.account.status == "revoked"


def test_refused_secret_write_is_ready_false_with_the_servers_message() -> None:
    inp = CredentialInput(
        ref=REF,
        spec=spec(),
        status=CredentialStatus(),
        secret=None,
        bindings=(),
        service=holds(),
        hash_key=HASH_KEY,
        candidate=Candidate("c", "cws_generated-1", "abcd0001"),
        endpoints=ENDPOINTS,
    )
    plan = decide(inp.failed(secret_refusal="HTTP 422 Secret is invalid: label"), NOW)
    assert plan.secret is None
    assert plan.retry
    assert cond(plan, "Ready")[:2] == ("False", "SecretRefused")
    assert "HTTP 422 Secret is invalid" in cond(plan, "Ready")[2]
    assert [e.reason for e in plan.events if e.type == "Warning"] == ["SecretRefused"]


def test_conflict_looks_again_soon() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = run(spec(), CredentialStatus(), observe(first, uid="someone-else"), conflict_recheck=timedelta(seconds=5))
    assert plan.requeue_after == timedelta(seconds=5)
    assert plan.account is None


# -- role bindings ----------------------------------------------------------------------------------------


def rb(name: str, account: str = "builder", **spec_: Any) -> ObservedBinding:
    return ObservedBinding.from_manifest(
        {
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 2},
            "spec": {"serviceAccount": account, **spec_},
        }
    )


def with_bindings(plan: Plan, bindings: tuple[ObservedBinding, ...], **kw: Any) -> Plan:
    inp = CredentialInput(
        ref=REF,
        spec=spec(),
        status=status_of(plan),
        secret=observe(plan),
        bindings=bindings,
        service=kw.pop("service", held_after(plan)),
        hash_key=HASH_KEY,
        candidate=Candidate("c", "cws_unused", "abcd0009"),
        endpoints=ENDPOINTS,
        **kw,
    )
    return decide(inp, NOW)


def test_all_bindings_of_an_account_are_pushed_as_one_set() -> None:
    first = run(spec(), CredentialStatus(), None)
    bindings = (
        rb("writers", roles=["w"], permissions=[{"verbs": ["write"], "path": ["out", "*"]}]),
        rb("readers", roles=["r"], permissions=[{"verbs": ["read"], "path": ["in"]}]),
    )
    plan = with_bindings(first, bindings)
    assert plan.mappings is not None
    assert [m.name for m in plan.mappings.mappings] == ["readers", "writers"]
    assert plan.mappings.mappings[1].permissions[0].path == ("out",)  # a trailing * is the path itself
    assert {u.name: u.status["conditions"][0]["status"] for u in plan.bindings} == {
        "readers": "True",
        "writers": "True",
    }
    assert all(u.status["observedGeneration"] == 2 for u in plan.bindings)


def test_mappings_already_held_are_not_pushed() -> None:
    first = run(spec(), CredentialStatus(), None)
    bindings = (rb("readers", roles=["r", "s"]),)
    seen = held_after(first)
    assert seen.account is not None
    view = seen.account.model_copy(update={"role_mappings": (RoleMapping(name="readers", roles=("s", "r")),)})
    plan = with_bindings(first, bindings, service=replace(seen, account=view))
    assert plan.mappings is None


def test_deleted_binding_pushes_the_remaining_set() -> None:
    first = run(spec(), CredentialStatus(), None)
    seen = held_after(first)
    assert seen.account is not None
    view = seen.account.model_copy(
        update={"role_mappings": (RoleMapping(name="a", roles=("x",)), RoleMapping(name="b", roles=("x",)))}
    )
    plan = with_bindings(first, (rb("a", roles=["x"]),), service=replace(seen, account=view))
    assert plan.mappings is not None
    assert [m.name for m in plan.mappings.mappings] == ["a"]


def test_mapping_failure_is_told_on_the_bindings() -> None:
    first = run(spec(), CredentialStatus(), None)
    failure = SyncOutcome(False, "Refused", "The security service refused the role mappings: no")
    plan = with_bindings(first, (rb("a", roles=["x"]),), mappings_failure=failure)
    assert plan.mappings is None
    assert plan.retry
    (update,) = plan.bindings
    assert update.status["conditions"][0]["reason"] == "Refused"
    assert update.warning == ("Refused", "The security service refused the role mappings: no")


def test_bindings_wait_while_the_service_is_unreachable() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = with_bindings(first, (rb("a", roles=["x"]),), service=ServiceUnreachable("down"))
    (update,) = plan.bindings
    assert update.status["conditions"][0]["reason"] == "ServiceUnreachable"


def test_orphan_bindings_wait_for_their_account() -> None:
    updates = orphan_updates((rb("a", account="later", roles=["x"]),), "later", NOW)
    (update,) = updates
    c = update.status["conditions"][0]
    assert (c["type"], c["status"], c["reason"]) == ("Synced", "False", "AccountNotFound")
    assert "later" in c["message"]


def test_unchanged_binding_status_is_not_written_again() -> None:
    first = run(spec(), CredentialStatus(), None)
    plan = with_bindings(first, (rb("a", roles=["x"]),))
    (update,) = plan.bindings
    written = ObservedBinding.from_manifest(
        {
            "metadata": {"name": "a", "uid": "uid-a", "generation": 2},
            "spec": {"serviceAccount": "builder", "roles": ["x"]},
            "status": update.status,
        }
    )
    assert with_bindings(first, (written,)).bindings == ()


# -- deletion ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "annotations", "elapsed", "failed", "action"),
    [
        (None, {}, 0, False, "release"),
        ("c", {"credward.io/skip-account-cleanup": "true"}, 0, False, "release"),
        ("c", {}, 0, False, "delete"),
        ("c", {}, 59, True, "delete"),
        ("c", {}, 60, True, "give-up"),
        ("c", {}, 3600, False, "delete"),  # try once more before giving up
    ],
)
def test_cleanup_action(
    client_id: str | None, annotations: dict[str, str], elapsed: int, failed: bool, action: str
) -> None:
    got = cleanup_action(
        client_id, annotations, NOW, NOW + timedelta(seconds=elapsed), timedelta(seconds=60), last_failed=failed
    )
    assert got == action

"""Coalesced restarts: which credentials a template uses, the record and its digest, and when to restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from credward.domain.restarts import (
    ANNOTATION_RESTART_ON_ROTATION,
    ANNOTATION_SECRET_IDS,
    REASON_ROLLED,
    REASON_ROLLED_LATE,
    CredentialState,
    References,
    SecretIds,
    credentials_used,
    decide_restart,
    digest,
    format_record,
    parse_record,
    references,
    rotation_pending,
)
from credward.domain.timefmt import to_rfc3339

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
WAIT = timedelta(minutes=1)


def workload(
    *,
    record: str | None = None,
    opted_in: bool = True,
    template_labels: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    **pod_spec: Any,
) -> dict[str, Any]:
    annotations = {ANNOTATION_RESTART_ON_ROTATION: "true"} if opted_in else {}
    if record is not None:
        annotations[ANNOTATION_SECRET_IDS] = record
    return {
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {
            "template": {
                "metadata": {"labels": template_labels or {}, "annotations": template_annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}], **pod_spec},
            }
        },
    }


def rotated(
    current: str, previous: str, *, age: timedelta = timedelta(seconds=1), grace: timedelta = timedelta(hours=24)
) -> SecretIds:
    created = NOW - age
    return SecretIds(current=current, created_at=created, previous=previous, previous_not_after=created + grace)


def steady(current: str) -> SecretIds:
    return SecretIds(current=current, created_at=NOW - timedelta(days=3))


def states(**secrets: SecretIds | None) -> dict[str, CredentialState]:
    return {name: CredentialState(name, ids) for name, ids in secrets.items()}


# -- which credentials a template uses -------------------------------------------------------------


def test_references_cover_injection_volumes_and_env() -> None:
    obj = workload(
        template_labels={"credward.io/inject": "true"},
        template_annotations={"credward.io/credential": "api"},
        volumes=[
            {"name": "a", "secret": {"secretName": "db-credentials"}},
            {
                "name": "b",
                "projected": {"sources": [{"secret": {"name": "cache-credentials"}}, {"configMap": {"name": "x"}}]},
            },
            {"name": "c", "emptyDir": {}},
        ],
        initContainers=[{"name": "init", "envFrom": [{"secretRef": {"name": "queue-credentials"}}]}],
        containers=[
            {
                "name": "app",
                "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "mail-credentials", "key": "k"}}}],
            }
        ],
    )
    refs = references("Deployment", obj)
    assert refs.credentials == {"api"}
    assert refs.secrets == {"db-credentials", "cache-credentials", "queue-credentials", "mail-credentials"}


def test_the_annotation_counts_only_with_the_inject_label_and_auto_names_the_workloads_account() -> None:
    unlabelled = workload(template_annotations={"credward.io/credential": "api"})
    assert references("Deployment", unlabelled).credentials == frozenset()
    auto = workload(
        template_labels={"credward.io/inject": "true"}, template_annotations={"credward.io/credential": "auto"}
    )
    assert references("Deployment", auto).credentials == {"deployment-web"}
    assert references("DaemonSet", auto).credentials == frozenset()  # no automatic accounts for DaemonSets


def test_only_credward_secrets_count() -> None:
    refs = References(frozenset({"api"}), frozenset({"db-credentials", "tls-cert"}))
    assert credentials_used(refs, {"db-credentials": "db", "api-credentials": "api"}) == {"api", "db"}


# -- the record ------------------------------------------------------------------------------------


def test_record_round_trips_and_the_digest_follows_ids_not_order() -> None:
    ids = {"db": "77c1aa02", "api": "0f3a9c1b"}
    assert format_record(ids) == "api=0f3a9c1b,db=77c1aa02"
    assert parse_record(format_record(ids)) == ids
    assert parse_record("") == {}
    assert parse_record(None) is None
    assert parse_record("garbage") is None
    assert digest(ids) == digest(dict(reversed(ids.items())))
    assert digest(ids) != digest({**ids, "db": "00000000"})


def test_secret_ids_come_from_the_annotations_of_a_secret_the_credential_controls() -> None:
    secret = {
        "metadata": {
            "annotations": {
                "credward.io/secret-id": "new1",
                "credward.io/secret-created-at": to_rfc3339(NOW),
                "credward.io/previous-secret-id": "old1",
                "credward.io/previous-secret-not-after": to_rfc3339(NOW + timedelta(hours=1)),
            },
            "ownerReferences": [{"kind": "ServiceAccountCredential", "name": "api", "controller": True, "uid": "u"}],
        },
        "data": {"client-secret": "c2VjcmV0"},
    }
    ids = SecretIds.from_manifest(secret, "api")
    assert ids == SecretIds("new1", NOW, "old1", NOW + timedelta(hours=1))
    assert ids.accepts_previous("old1", NOW)
    assert not ids.accepts_previous("old1", NOW + timedelta(hours=1))
    assert SecretIds.from_manifest(secret, "other") is None  # not that credential's Secret
    assert SecretIds.from_manifest(None, "api") is None


# -- the decision ----------------------------------------------------------------------------------


def test_a_workload_seen_for_the_first_time_is_recorded_without_a_restart() -> None:
    decision = decide_restart(workload(), states(api=steady("a1"), db=steady("d1")), NOW, WAIT)
    assert decision.action == "record"
    assert decision.record == "api=a1,db=d1"
    assert decision.event is None


def test_nothing_rotated_means_nothing_to_do() -> None:
    decision = decide_restart(workload(record="api=a1,db=d1"), states(api=steady("a1"), db=steady("d1")), NOW, WAIT)
    assert decision.action == "none"


def test_several_credentials_rotated_together_give_one_restart_naming_them() -> None:
    decision = decide_restart(
        workload(record="api=a1,db=d1,mail=m1"),
        states(api=rotated("a2", "a1"), db=rotated("d2", "d1"), mail=steady("m1")),
        NOW,
        WAIT,
    )
    assert decision.action == "restart"
    assert decision.rotated == ("api", "db")
    assert decision.record == "api=a2,db=d2,mail=m1"
    assert decision.digest == digest({"api": "a2", "db": "d2", "mail": "m1"})
    assert decision.late == ()
    event = decision.event
    assert event is not None
    assert event[:2] == ("Normal", REASON_ROLLED)
    assert "api, db" in event[2]


def test_the_restart_waits_for_a_rotation_about_to_happen() -> None:
    pending = CredentialState("db", steady("d1"), rotation_pending=True)
    given = {"api": CredentialState("api", rotated("a2", "a1", age=timedelta(seconds=5))), "db": pending}
    decision = decide_restart(workload(record="api=a1,db=d1"), given, NOW, WAIT)
    assert decision.action == "wait"
    assert decision.recheck_after == timedelta(seconds=55)  # max_wait after the first new secret
    # ...but not longer than that: then it restarts for what rotated.
    given["api"] = CredentialState("api", rotated("a2", "a1", age=timedelta(minutes=2)))
    assert decide_restart(workload(record="api=a1,db=d1"), given, NOW, WAIT).action == "restart"


def test_the_wait_never_takes_more_than_half_the_overlap() -> None:
    short = rotated("a2", "a1", age=timedelta(seconds=5), grace=timedelta(seconds=20))
    given = {"api": CredentialState("api", short), "db": CredentialState("db", steady("d1"), rotation_pending=True)}
    decision = decide_restart(workload(record="api=a1,db=d1"), given, NOW, WAIT)
    assert decision.action == "wait"
    assert decision.recheck_after == timedelta(seconds=5)


def test_a_credential_that_joined_or_left_the_template_only_updates_the_record() -> None:
    joined = decide_restart(workload(record="api=a1"), states(api=steady("a1"), db=steady("d1")), NOW, WAIT)
    assert (joined.action, joined.record) == ("record", "api=a1,db=d1")
    left = decide_restart(workload(record="api=a1,db=d1"), states(api=steady("a1")), NOW, WAIT)
    assert (left.action, left.record) == ("record", "api=a1")


def test_a_missing_secret_keeps_its_recorded_id() -> None:
    decision = decide_restart(workload(record="api=a1,db=d1"), states(api=steady("a1"), db=None), NOW, WAIT)
    assert decision.action == "none"


def test_a_restart_after_the_overlap_is_a_warning() -> None:
    ended = rotated("a2", "a1", age=timedelta(hours=2), grace=timedelta(hours=1))
    decision = decide_restart(workload(record="api=a1"), states(api=ended), NOW, WAIT)
    assert decision.action == "restart"
    assert decision.late == ("api",)
    event = decision.event
    assert event is not None
    assert event[:2] == ("Warning", REASON_ROLLED_LATE)


def test_workloads_without_the_annotation_are_left_alone() -> None:
    decision = decide_restart(workload(opted_in=False, record="api=a1"), states(api=rotated("a2", "a1")), NOW, WAIT)
    assert decision.action == "none"


def credential(annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "api", "annotations": annotations or {}}, "spec": {}, "status": status}


def test_rotation_pending_reads_the_request_and_the_schedule() -> None:
    ids = SecretIds("a1", NOW - timedelta(days=1), rotate_handled="first")
    assert rotation_pending(credential({"credward.io/rotate": "second"}), ids, NOW, WAIT)
    assert not rotation_pending(credential({"credward.io/rotate": "first"}), ids, NOW, WAIT)
    assert rotation_pending(credential(nextRotationTime=to_rfc3339(NOW + timedelta(seconds=30))), ids, NOW, WAIT)
    assert not rotation_pending(credential(nextRotationTime=to_rfc3339(NOW + timedelta(hours=1))), ids, NOW, WAIT)
    # No rotation starts while an overlap is open, nor for a revoked credential.
    open_overlap = SecretIds("a2", NOW, previous="a1", previous_not_after=NOW + timedelta(hours=1))
    assert not rotation_pending(credential({"credward.io/rotate": "second"}), open_overlap, NOW, WAIT)
    revoked = credential({"credward.io/rotate": "second"})
    revoked["spec"]["revoked"] = True
    assert not rotation_pending(revoked, ids, NOW, WAIT)

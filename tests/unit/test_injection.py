"""inject(): the JSONPatch for an opted-in Pod, idempotency, clashes, and the credential checks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonpatch
import pytest

from credward.domain.injection import (
    ANNOTATION_CONTAINERS,
    ANNOTATION_CREDENTIAL,
    ANNOTATION_INIT_CONTAINERS,
    ANNOTATION_MOUNT_PATH,
    LABEL_INJECT,
    CredentialView,
    InjectionRequest,
    InjectionSettings,
    Verdict,
    check_credential,
    describe,
    inject,
    parse_request,
    volume_name,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
SETTINGS = InjectionSettings(security_base_url="http://credward-security.credward:9000")
CRED = CredentialView(namespace="ci", name="builder", secret_name="builder-credentials")
WHAT = "Pod web"


def pod(
    *containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [{"name": "app", "image": "busybox"}]}
    if init:
        spec["initContainers"] = list(init)
    return {
        "metadata": {
            "name": "web",
            "labels": {LABEL_INJECT: "true"},
            "annotations": {ANNOTATION_CREDENTIAL: "builder", **(annotations or {})},
        },
        "spec": spec,
    }


def request_of(obj: dict[str, Any]) -> InjectionRequest:
    req = parse_request(obj, WHAT)
    assert isinstance(req, InjectionRequest), req
    return req


def mutate(obj: dict[str, Any]) -> tuple[Verdict, dict[str, Any]]:
    verdict = inject(obj, CRED, request_of(obj), SETTINGS, WHAT)
    assert verdict.allowed, verdict.message
    return verdict, jsonpatch.apply_patch(obj, list(verdict.patch))


def expected_env(path: str = "/var/run/secrets/credward.io/builder") -> list[dict[str, Any]]:
    return [
        {"name": "CLIENT_ID", "valueFrom": {"secretKeyRef": {"name": "builder-credentials", "key": "client-id"}}},
        {"name": "CLIENT_SECRET_PATH", "value": f"{path}/client-secret"},
        {"name": "SECURITY_BASE_URL", "value": SETTINGS.security_base_url},
    ]


def test_bare_pod_gets_volume_mount_and_three_variables() -> None:
    _, out = mutate(pod())
    assert out["spec"]["volumes"] == [{"name": "credward-builder", "secret": {"secretName": "builder-credentials"}}]
    app = out["spec"]["containers"][0]
    assert app["volumeMounts"] == [
        {"name": "credward-builder", "mountPath": "/var/run/secrets/credward.io/builder", "readOnly": True}
    ]
    assert app["env"] == expected_env()
    assert "subPath" not in app["volumeMounts"][0]


def test_nothing_else_changes_and_user_entries_stay_in_place() -> None:
    user_env = [{"name": "LOG_LEVEL", "value": "debug"}]
    user_mounts = [{"name": "data", "mountPath": "/data"}]
    original = pod({"name": "app", "image": "busybox", "env": user_env, "volumeMounts": user_mounts})
    original["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    before = copy.deepcopy(original)
    verdict, out = mutate(original)
    assert original == before  # the input is not modified
    assert all(op["op"] == "add" for op in verdict.patch)
    assert out["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}
    app = out["spec"]["containers"][0]
    # credward's variables come first, so the user's may refer to them as $(CLIENT_SECRET_PATH).
    assert app["env"] == [*expected_env(), *user_env]
    assert app["volumeMounts"][0] == user_mounts[0]
    assert out["metadata"] == before["metadata"]


def test_second_pass_changes_nothing() -> None:
    _, once = mutate(
        pod({"name": "a", "image": "x", "env": [{"name": "K", "value": "v"}]}, {"name": "b", "image": "x"})
    )
    verdict, twice = mutate(once)
    assert verdict.patch == ()
    assert twice == once


def test_second_pass_tolerates_api_server_defaults() -> None:
    _, once = mutate(pod())
    once["spec"]["volumes"][0]["secret"]["defaultMode"] = 420  # what the API server stores
    assert mutate(once)[0].patch == ()


def test_reinvocation_reaches_a_container_added_later() -> None:
    _, once = mutate(pod())
    once["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    verdict, twice = mutate(once)
    assert {op["path"] for op in verdict.patch} == {"/spec/containers/1/volumeMounts", "/spec/containers/1/env"}
    assert twice["spec"]["containers"][1]["env"] == expected_env()


def test_containers_annotation_selects_and_init_containers_opt_in() -> None:
    obj = pod(
        {"name": "app", "image": "x"},
        {"name": "proxy", "image": "y"},
        init=({"name": "fetch", "image": "z"}, {"name": "migrate", "image": "z"}),
        annotations={ANNOTATION_CONTAINERS: "app", ANNOTATION_INIT_CONTAINERS: "migrate"},
    )
    _, out = mutate(obj)
    assert "env" in out["spec"]["containers"][0]
    assert "env" not in out["spec"]["containers"][1]
    assert "env" not in out["spec"]["initContainers"][0]
    assert out["spec"]["initContainers"][1]["env"] == expected_env()


def test_star_selects_every_init_container() -> None:
    obj = pod(
        init=({"name": "a", "image": "z"}, {"name": "b", "image": "z"}), annotations={ANNOTATION_INIT_CONTAINERS: "*"}
    )
    _, out = mutate(obj)
    assert all(c["env"] == expected_env() for c in out["spec"]["initContainers"])


def test_mount_path_annotation() -> None:
    _, out = mutate(pod(annotations={ANNOTATION_MOUNT_PATH: "/etc/identity"}))
    app = out["spec"]["containers"][0]
    assert app["volumeMounts"][0]["mountPath"] == "/etc/identity"
    assert app["env"] == expected_env("/etc/identity")


@pytest.mark.parametrize("path", ["relative/dir", "/etc/../root", "/a//b", "/", "/x:y", "/trailing/"])
def test_malformed_mount_path_is_refused(path: str) -> None:
    verdict = parse_request(pod(annotations={ANNOTATION_MOUNT_PATH: path}), WHAT)
    assert isinstance(verdict, Verdict)
    assert not verdict.allowed
    assert ANNOTATION_MOUNT_PATH in verdict.message
    assert repr(path) in verdict.message


def test_unknown_container_is_named() -> None:
    obj = pod(annotations={ANNOTATION_CONTAINERS: "app,ghost"})
    verdict = inject(obj, CRED, request_of(obj), SETTINGS, WHAT)
    assert not verdict.allowed
    assert "'ghost'" in verdict.message
    assert "'app'" in verdict.message
    assert ANNOTATION_CONTAINERS in verdict.message


def test_missing_annotation_is_refused_with_what_to_do() -> None:
    obj = pod()
    del obj["metadata"]["annotations"][ANNOTATION_CREDENTIAL]
    verdict = parse_request(obj, WHAT)
    assert isinstance(verdict, Verdict)
    assert ANNOTATION_CREDENTIAL in verdict.message
    assert LABEL_INJECT in verdict.message


@pytest.mark.parametrize(
    ("change", "reason", "named"),
    [
        (
            lambda p: p["spec"].update(volumes=[{"name": "credward-builder", "emptyDir": {}}]),
            "VolumeNameClash",
            "credward-builder",
        ),
        (
            lambda p: p["spec"].update(volumes=[{"name": "credward-builder", "secret": {"secretName": "other"}}]),
            "VolumeNameClash",
            "credward-builder",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(env=[{"name": "CLIENT_ID", "value": "mine"}]),
            "EnvClash",
            "CLIENT_ID",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(env=[{"name": "SECURITY_BASE_URL", "value": "http://x"}]),
            "EnvClash",
            "SECURITY_BASE_URL",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(
                volumeMounts=[{"name": "data", "mountPath": "/var/run/secrets/credward.io/builder"}]
            ),
            "MountPathClash",
            '"data"',
        ),
    ],
)
def test_a_clash_with_what_the_user_wrote_is_refused_by_name(change: Any, reason: str, named: str) -> None:
    obj = pod()
    change(obj)
    verdict = inject(obj, CRED, request_of(obj), SETTINGS, WHAT)
    assert (verdict.allowed, verdict.reason) == (False, reason)
    assert named in verdict.message
    assert 'container "app"' in verdict.message or reason == "VolumeNameClash"


def test_secret_name_from_status_then_spec_then_default() -> None:
    meta = {"name": "c", "namespace": "n"}
    assert CredentialView.from_manifest({"metadata": meta}).secret_name == "c-credentials"
    assert CredentialView.from_manifest({"metadata": meta, "spec": {"secretName": "s"}}).secret_name == "s"
    both = {"metadata": meta, "spec": {"secretName": "s"}, "status": {"secretName": "t"}}
    assert CredentialView.from_manifest(both).secret_name == "t"


def test_missing_revoked_expired_are_refused_naming_the_credential() -> None:
    missing = check_credential(None, "builder", "ci", WHAT, NOW)
    assert missing is not None
    assert missing.reason == "CredentialNotFound"
    assert '"builder"' in missing.message
    assert '"ci"' in missing.message
    assert "create it" in missing.message
    revoked = CredentialView.from_manifest(
        {"metadata": {"name": "builder", "namespace": "ci"}, "spec": {"revoked": True}}
    )
    verdict = check_credential(revoked, "builder", "ci", WHAT, NOW)
    assert verdict is not None
    assert verdict.reason == "CredentialRevoked"
    assert "spec.revoked" in verdict.message
    expired = CredentialView.from_manifest(
        {"metadata": {"name": "builder", "namespace": "ci"}, "status": {"expiresAt": "2026-11-22T11:00:00Z"}}
    )
    verdict = check_credential(expired, "builder", "ci", WHAT, NOW)
    assert verdict is not None
    assert verdict.reason == "CredentialExpired"
    assert "2026-11-22T11:00:00Z" in verdict.message
    assert check_credential(expired, "builder", "ci", WHAT, NOW - timedelta(hours=2)) is None
    by_condition = CredentialView.from_manifest(
        {
            "metadata": {"name": "b", "namespace": "ci"},
            "status": {"conditions": [{"type": "Expired", "status": "True"}]},
        }
    )
    assert by_condition.is_expired(NOW)


def test_volume_names_are_dns_labels() -> None:
    assert volume_name("builder") == "credward-builder"
    long = volume_name("a" * 200)
    dotted = volume_name("team.builder")
    assert len(long) <= 63
    assert len(dotted) <= 63
    assert "." not in dotted
    assert dotted != volume_name("team-builder")


def test_generated_names_are_described() -> None:
    assert describe("Pod", {"metadata": {"generateName": "web-7c9d-"}}) == "Pod web-7c9d-*"
    assert describe("Deployment", {"metadata": {"name": "web"}}) == "Deployment web (pod template)"

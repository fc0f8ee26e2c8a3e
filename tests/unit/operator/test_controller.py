"""CredentialController with injected failing clients: every failure gets a fate, nothing drops a wake-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.unit.operator.operator_fakes import HASH_KEY, FakeKube, FakeService, binding, credential

from credward.domain.credential import FINALIZER
from credward.errors import Gone, KubeRefused, KubeUnavailable, NamespaceTerminating, ServiceRefused, ServiceUnavailable
from credward.operator.controller import CredentialController
from credward.operator.settings import OperatorSettings

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
KEY = ("ci", "app")


def settings(**kw: Any) -> OperatorSettings:
    return OperatorSettings(
        security_base_url="http://svc:9000",
        issuer="http://svc:9000",
        hash_key_file=Path("unused"),
        token_file=Path("unused"),
        cleanup_timeout=timedelta(seconds=60),
        **kw,
    )


@pytest.fixture
async def world() -> Any:
    kube, service = FakeKube(), FakeService()
    controller = CredentialController(kube, service, settings(), HASH_KEY, clock=lambda: NOW)
    yield kube, service, controller
    controller.requeue.close()


def due(controller: CredentialController, key: tuple[str, str] = KEY) -> float:
    """Seconds until the key's next wake-up (fails if it has none)."""
    assert key in controller.requeue.pending(), "no wake-up scheduled"
    return controller.requeue._due[key] - asyncio.get_running_loop().time()


async def test_happy_path_registers_before_writing_and_schedules_resync(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    kube.bindings[("ci", "r")] = binding("r", "app", roles=["reader"])
    await controller.reconcile(*KEY)
    status = kube.credentials[KEY]["status"]
    client_id = status["clientId"]
    assert service.calls[:3] == ["info", "put_account", "put_role_mappings"]  # get_account skipped: no id yet
    assert kube.writes[:2] == ["finalizer+", "secret app-credentials"]
    assert client_id in service.accounts
    assert service.accounts[client_id]["roleMappings"][0]["name"] == "r"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["Registered"] == "True"
    assert kube.bindings[("ci", "r")]["status"]["conditions"][0]["status"] == "True"
    assert 590 < due(controller) <= 600
    # Again: nothing to write, one push after a restart aside (the controller remembers this one).
    kube.writes.clear()
    service.calls.clear()
    await controller.reconcile(*KEY)
    assert kube.writes == []
    assert "put_account" not in service.calls


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ClientConnectionError("connection reset"),
        TimeoutError(),
        RuntimeError("a bug"),
        KeyError("metadata"),
    ],
)
async def test_unexpected_errors_are_counted_and_retried_with_backoff(world: Any, error: BaseException) -> None:
    """Even what the edge should have mapped (and did not) keeps its wake-up."""
    kube, _, controller = world
    kube.credentials[KEY] = credential("app")
    kube.fail["get_secret"] = error
    await controller.reconcile(*KEY)
    assert 0 < due(controller) <= 1.0
    await controller.reconcile(*KEY)
    assert 1.0 < due(controller) <= 2.0
    counted = controller.metrics.unexpected.labels(error=type(error).__name__)._value.get()
    assert counted == 2


async def test_transient_kube_errors_back_off_capped(world: Any) -> None:
    kube, _, controller = world
    kube.credentials[KEY] = credential("app")
    kube.fail["get_credential"] = KubeUnavailable("reading: HTTP 503", delay=1.0)
    delays = []
    for _ in range(12):
        await controller.reconcile(*KEY)
        delays.append(round(due(controller)))
    assert delays[:4] == [1, 2, 4, 8]
    assert max(delays) == 300  # the default cap
    kube.fail.clear()
    await controller.reconcile(*KEY)
    assert due(controller) > 590  # success resets the backoff and goes back to the resync interval


async def test_unreachable_service_is_a_condition_and_a_backoff_not_a_crash(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    service.fail["info"] = ServiceUnavailable("GET /v1/admin/info: ConnectError")
    await controller.reconcile(*KEY)
    conditions = {c["type"]: c for c in kube.credentials[KEY]["status"]["conditions"]}
    assert conditions["Registered"]["reason"] == "ServiceUnreachable"
    assert KEY not in {k for k in kube.secrets}  # no new secret the service could not hold
    assert 0 < due(controller) <= 1.0
    service.fail.clear()
    controller.info = None
    await controller.reconcile(*KEY)
    assert kube.credentials[KEY]["status"]["conditions"][0]["status"] == "True"


async def test_failed_push_is_decided_again_and_nothing_is_written_to_the_secret(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    service.fail["put_account"] = ServiceRefused("PUT: HTTP 400: groups.0: nope", 400)
    await controller.reconcile(*KEY)
    assert kube.secrets == {}
    registered = next(c for c in kube.credentials[KEY]["status"]["conditions"] if c["type"] == "Registered")
    assert registered["reason"] == "Refused"
    assert "groups.0: nope" in registered["message"]
    assert [e.reason for _, e in kube.events] == ["Refused"]


async def test_refused_mappings_show_on_the_bindings(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    kube.bindings[("ci", "r")] = binding("r", "app", roles=["reader"])
    service.fail["put_role_mappings"] = ServiceRefused("HTTP 400: too many", 400)
    await controller.reconcile(*KEY)
    synced = kube.bindings[("ci", "r")]["status"]["conditions"][0]
    assert (synced["status"], synced["reason"]) == ("False", "Refused")
    assert ("r", "Refused") in {(name, e.reason) for name, e in kube.events}
    assert kube.credentials[KEY]["status"]["conditions"][1]["status"] == "True"  # the account itself is registered


async def test_refused_secret_write_becomes_ready_false_and_retries(world: Any) -> None:
    kube, _, controller = world
    kube.credentials[KEY] = credential("app")
    kube.fail["apply_secret"] = KubeRefused('HTTP 422 Secret "app-credentials" is invalid', 422)
    await controller.reconcile(*KEY)
    ready = kube.credentials[KEY]["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "SecretRefused")
    assert "is invalid" in ready["message"]
    assert "SecretRefused" in [e.reason for _, e in kube.events]
    assert 0 < due(controller) <= 1.0


@pytest.mark.parametrize("error", [NamespaceTerminating("the namespace is being deleted"), Gone("gone")])
async def test_gone_ends_the_work_without_a_retry_loop(world: Any, error: BaseException) -> None:
    kube, _, controller = world
    kube.credentials[KEY] = credential("app")
    kube.fail["apply_secret"] = error
    await controller.reconcile(*KEY)
    assert KEY not in controller.requeue.pending()
    assert controller.metrics.retries.labels(reason=type(error).__name__)._value.get() == 0


async def test_deletion_removes_the_account_then_the_finalizer(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.reconcile(*KEY)
    client_id = kube.credentials[KEY]["status"]["clientId"]
    kube.credentials[KEY]["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    await controller.reconcile(*KEY)
    assert client_id not in service.accounts
    assert KEY not in kube.credentials
    assert kube.writes[-1] == "finalizer-"


async def test_deletion_gives_up_after_the_cleanup_timeout(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.reconcile(*KEY)
    kube.credentials[KEY]["metadata"]["deletionTimestamp"] = "2026-11-22T11:59:30Z"  # 30 s ago
    service.fail["delete_account"] = ServiceUnavailable("DELETE: ConnectError")
    await controller.reconcile(*KEY)
    assert KEY in kube.credentials  # still waiting
    assert "AccountCleanupPending" in [e.reason for _, e in kube.events]
    assert due(controller) <= 30
    kube.credentials[KEY]["metadata"]["deletionTimestamp"] = "2026-11-22T11:58:00Z"  # 2 min ago > 60 s
    await controller.reconcile(*KEY)
    assert KEY not in kube.credentials
    abandoned = [e for _, e in kube.events if e.reason == "AccountCleanupAbandoned"]
    assert abandoned
    assert abandoned[0].type == "Warning"


async def test_skip_annotation_releases_without_calling_the_service(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.reconcile(*KEY)
    meta = kube.credentials[KEY]["metadata"]
    meta["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    meta["annotations"] = {"credward.io/skip-account-cleanup": "true"}
    assert FINALIZER in meta["finalizers"]
    service.calls.clear()
    await controller.reconcile(*KEY)
    assert "delete_account" not in service.calls
    assert KEY not in kube.credentials


async def test_missing_credential_marks_its_bindings_account_not_found(world: Any) -> None:
    kube, _, controller = world
    kube.bindings[("ci", "r")] = binding("r", "app", roles=["reader"])
    await controller.reconcile(*KEY)
    synced = kube.bindings[("ci", "r")]["status"]["conditions"][0]
    assert (synced["status"], synced["reason"]) == ("False", "AccountNotFound")
    assert KEY not in controller.requeue.pending()  # the credential's creation event wakes it


async def test_a_new_store_is_noticed_and_everything_pushed_again(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.refresh_info()
    await controller.reconcile(*KEY)
    service.accounts.clear()
    service.store_id = "store-2"
    await controller.refresh_info()
    assert due(controller) <= 2.0  # resync soon, not at the resync interval
    await controller.reconcile(*KEY)
    assert kube.credentials[KEY]["status"]["clientId"] in service.accounts


async def test_unexpected_error_in_a_wake_up_task_keeps_the_next_wake_up() -> None:
    """The Requeue's own guard: even if reconcile itself raised, the task reschedules the key."""
    calls: list[tuple[str, str]] = []

    async def broken(key: tuple[str, str]) -> None:
        calls.append(key)
        raise RuntimeError("boom")

    from credward.operator.requeue import Requeue

    seen: list[BaseException] = []
    requeue = Requeue(broken, backoff_base=0.01, on_unexpected=lambda key, exc: seen.append(exc))
    requeue.after(KEY, 0)
    await asyncio.sleep(0.1)
    requeue.close()
    assert len(calls) >= 2
    assert isinstance(seen[0], RuntimeError)


def deadlines(service: FakeService, client_id: str) -> list[tuple[str, str | None]]:
    return [(s["id"], s.get("notAfter")) for s in service.accounts[client_id]["secrets"]]


async def test_a_rotation_registers_the_old_secrets_deadline_only_after_the_secret_is_written(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app", rotation={"period": "1h", "gracePeriod": "10m"})
    await controller.reconcile(*KEY)
    client_id = kube.credentials[KEY]["status"]["clientId"]
    first = deadlines(service, client_id)[0][0]
    kube.credentials[KEY]["metadata"]["annotations"] = {"credward.io/rotate": "now"}
    kube.fail["apply_secret"] = KubeRefused("a policy refuses it", 422)
    await controller.reconcile(*KEY)
    # The new secret is registered beside the old one, but with no deadline while the Secret holds the old one.
    held = deadlines(service, client_id)
    assert len(held) == 2
    assert all(not_after is None for _, not_after in held)
    del kube.fail["apply_secret"]
    service.calls.clear()
    await controller.reconcile(*KEY)
    assert service.calls.count("put_account") == 2  # the new secret, then (Secret written) the old one's deadline
    final = dict(deadlines(service, client_id))
    assert final[first] == "2026-11-22T12:10:00Z"
    assert [v for k, v in final.items() if k != first] == [None]


async def test_deletion_revokes_the_account_before_removing_it(world: Any) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.reconcile(*KEY)
    kube.credentials[KEY]["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    service.calls.clear()
    await controller.reconcile(*KEY)
    assert [c for c in service.calls if c in ("revoke", "delete_account")] == ["revoke", "delete_account"]

"""The lifecycle metrics the controller keeps, with injected failing clients (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.operator.operator_fakes import HASH_KEY, FakeKube, FakeService, credential
from tests.unit.operator.test_controller import KEY, NOW, settings

from credward.domain.timefmt import parse_rfc3339
from credward.errors import ServiceRefused, ServiceUnavailable
from credward.operator.controller import CredentialController

pytestmark = pytest.mark.unit


@pytest.fixture
async def world() -> Any:
    kube, service = FakeKube(), FakeService()
    controller = CredentialController(kube, service, settings(), HASH_KEY, clock=lambda: NOW)
    yield kube, service, controller
    controller.requeue.close()


def value(controller: CredentialController, family: str, **labels: str) -> float | None:
    return controller.metrics.registry.get_sample_value(family, labels or None)


async def test_schedule_gauges_follow_the_status_and_go_with_the_credential(world: Any) -> None:
    kube, _, controller = world
    kube.credentials[KEY] = credential("app", lifetime="48h", expiryWarning="1h")
    await controller.reconcile(*KEY)
    status = kube.credentials[KEY]["status"]
    labels = {"namespace": "ci", "name": "app"}
    next_at = parse_rfc3339(status["nextRotationTime"]).timestamp()
    assert value(controller, "credward_operator_next_rotation_timestamp_seconds", **labels) == next_at
    expires = parse_rfc3339(status["expiresAt"]).timestamp()
    assert value(controller, "credward_operator_credential_expiry_timestamp_seconds", **labels) == expires
    assert value(controller, "credward_operator_credential_expiring_soon", **labels) == 0
    assert value(controller, "credward_operator_secret_in_use_past_grace_callers", **labels) == 0
    assert value(controller, "credward_operator_reconcile_duration_seconds_count") == 1
    assert value(controller, "credward_operator_queue_depth") == 0
    controller.forget(*KEY)
    assert value(controller, "credward_operator_next_rotation_timestamp_seconds", **labels) is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [(ServiceUnavailable("connection refused"), "unreachable"), (ServiceRefused("HTTP 400", 400), "refused")],
)
async def test_a_failed_push_is_a_registration_error_and_a_failed_rotation(
    world: Any, error: BaseException, kind: str
) -> None:
    kube, service, controller = world
    kube.credentials[KEY] = credential("app")
    await controller.reconcile(*KEY)
    kube.credentials[KEY]["metadata"].setdefault("annotations", {})["credward.io/rotate"] = "now-please"
    service.fail["put_account"] = error
    await controller.reconcile(*KEY)
    assert value(controller, "credward_operator_registration_errors_total", kind=kind) == 1
    assert value(controller, "credward_operator_rotation_failures_total", step="register") == 1
    assert value(controller, "credward_operator_rotations_total", reason="requested") is None
    del service.fail["put_account"]
    await controller.reconcile(*KEY)
    assert value(controller, "credward_operator_rotations_total", reason="requested") == 1

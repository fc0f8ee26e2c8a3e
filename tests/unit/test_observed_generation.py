"""Every status credward writes says which generation it describes: on the status and on each condition.

kstatus (Flux, Argo CD-style checks) treats an object whose ``status.observedGeneration`` lags
``metadata.generation`` as in progress; Kubernetes' condition convention puts the generation on each
condition too, so a reader can tell a fresh condition from one left over.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_credential_decide import NOW, REF, held_after, observe, run

from credward.api.models import CredentialSpec, CredentialStatus
from credward.domain.credential import ObservedSecret
from credward.domain.rolebinding import ObservedBinding, SyncOutcome, binding_updates, orphan_updates

pytestmark = pytest.mark.unit


def assert_current(status: dict[str, Any], generation: int) -> None:
    assert status["observedGeneration"] == generation
    assert status["conditions"]
    for cond in status["conditions"]:
        assert cond.get("observedGeneration") == generation, cond["type"]


@pytest.mark.parametrize(
    "spec",
    [
        {"displayName": "b"},
        {"displayName": "b", "revoked": True},
        {"displayName": "b", "lifetime": "30m"},
        {"displayName": "b", "rotation": {"period": "24h", "gracePeriod": "1h"}},
    ],
)
def test_every_credential_state_is_stamped_with_its_generation(spec: dict[str, Any]) -> None:
    s = CredentialSpec.model_validate(spec)
    first = run(s, CredentialStatus(), None)
    assert first.status is not None
    assert_current(first.status, REF.generation)
    settled = run(s, CredentialStatus.model_validate(first.status), observe(first), service=held_after(first))
    if settled.status is not None:
        assert_current(settled.status, REF.generation)


def test_a_secret_conflict_is_stamped_with_its_generation() -> None:
    foreign = ObservedSecret(name="builder-credentials", controller_uids=(), data={}, labels={}, annotations={})
    plan = run(CredentialSpec.model_validate({"displayName": "b"}), CredentialStatus(), foreign)
    assert plan.status is not None
    assert_current(plan.status, REF.generation)


def binding(generation: int) -> ObservedBinding:
    return ObservedBinding.from_manifest(
        {
            "metadata": {"name": "rb", "uid": "uid-rb", "generation": generation},
            "spec": {"serviceAccount": "builder", "roles": ["r"]},
        }
    )


@pytest.mark.parametrize(
    "outcome",
    [
        SyncOutcome(True, "Synced", "synced"),
        SyncOutcome(False, "ServiceUnreachable", "later"),
        SyncOutcome(False, "AccountNotFound", "no account"),
    ],
)
def test_every_rolebinding_state_is_stamped_with_its_generation(outcome: SyncOutcome) -> None:
    (update,) = binding_updates([binding(7)], outcome, NOW)
    assert_current(update.status, 7)


def test_an_orphaned_rolebinding_is_stamped_with_its_generation() -> None:
    (update,) = orphan_updates([binding(4)], "builder", NOW)
    assert_current(update.status, 4)

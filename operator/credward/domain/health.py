"""Health that GitOps tools can read: ``Reconciling`` and ``Stalled`` from a resource's summary condition.

Flux, kpt and Argo CD-style health checks read custom resources with kstatus
(``sigs.k8s.io/cli-utils``). For a custom resource it looks, in this order, at
``metadata.generation`` against ``status.observedGeneration`` (different:
InProgress), then at ``Reconciling=True`` (InProgress) and ``Stalled=True``
(Failed), and only then at ``Ready``: ``True`` reads Current, but ``False``
reads InProgress whatever its reason. A state that no retry can end would
therefore make a pipeline wait until its timeout. So every reconcile states
both "abnormal-true" conditions, derived from the one condition that sums the
object up (``Ready`` for a credential, ``Synced`` for a RoleBinding):

- summary ``True``: ``Reconciling=False``, ``Stalled=False`` — Current;
- summary not ``True`` with a reason in :data:`NEEDS_A_PERSON`: ``Stalled=True``
  with that reason and a message that ends with what a person must do — Failed;
- any other summary, or none yet: ``Reconciling=True`` with the summary's
  reason and message — InProgress, never Current before the summary is True.

Why a revoked credential reads Failed, not Current: revocation is what the spec
asks for and the operator carries it out, but health answers "does this object
do its job", and a revoked account cannot get a token — whatever mounts its
Secret is broken. Nothing the operator retries changes that; only a person
setting ``spec.revoked`` back to false (or deleting the credential) does, which
is exactly kstatus's definition of Stalled. Current would contradict the
object's own ``Ready=False`` and hide a blocked account among healthy ones, so
that a pipeline or a ``dependsOn`` chain would go on as if the workloads could
authenticate; InProgress would make it wait for a change that never comes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from credward.domain.conditions import ConditionSpec

RECONCILING = "Reconciling"
STALLED = "Stalled"
READY = "Ready"

REASON_PENDING = "Pending"

# Reasons of a summary condition that no retry ends, each with what a person must do about it.
# (The reason strings are those of credward.domain.credential; a unit test keeps them in step.)
NEEDS_A_PERSON: Mapping[str, str] = {
    "SecretConflict": "Until a person does, the credential has no Secret and its account no client secret",
    "Expired": "Delete and recreate the credential to get a working account",
    "Revoked": "Set spec.revoked to false to unblock the account, or delete the credential",
    "SecretRefused": "Fix what the API server refused (as said first), e.g. spec.secretTemplate or a policy",
    "Refused": "Fix what the security service refused (as said first) in the spec or the service",
    "HashKeyMismatch": "Give the operator and the security service the same secret-hash key Secret",
}


def kstatus_conditions(
    conditions: Sequence[ConditionSpec],
    *,
    summary: str = READY,
    needs_a_person: Mapping[str, str] = NEEDS_A_PERSON,
) -> list[ConditionSpec]:
    """``conditions`` (without any Reconciling/Stalled) followed by Reconciling and Stalled.

    Both are derived from the condition of type ``summary``; see the module docstring
    for the three outcomes. ``needs_a_person`` maps the summary reasons that only a
    person can end to the sentence that tells them what to do.
    """
    own = [c for c in conditions if c.type not in (RECONCILING, STALLED)]
    head = next((c for c in own if c.type == summary), None)
    if head is None:
        head = ConditionSpec(summary, "Unknown", REASON_PENDING, f"No {summary} condition yet")
    if head.status == "True":
        reconciling = ConditionSpec(RECONCILING, "False", head.reason, "")
        stalled = ConditionSpec(STALLED, "False", head.reason, "")
    elif head.reason in needs_a_person:
        message = f"{head.message.rstrip('. ')}. {needs_a_person[head.reason]}"
        reconciling = ConditionSpec(RECONCILING, "False", head.reason, "Waiting for a person (see Stalled)")
        stalled = ConditionSpec(STALLED, "True", head.reason, message)
    else:
        reconciling = ConditionSpec(RECONCILING, "True", head.reason, head.message)
        stalled = ConditionSpec(STALLED, "False", head.reason, "")
    return [*own, reconciling, stalled]

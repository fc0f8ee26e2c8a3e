"""The real kube-apiserver enforces the CRDs: invalid objects are refused with a message a person can act on.

Every invalid object below is a valid one with one mistake, so each case checks one rule. Objects are
sent with ``--dry-run=server``: admission runs in full, nothing is stored.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from credward.api import API_VERSION, CREDENTIAL_KIND, CREDENTIAL_PLURAL, GROUP, ROLEBINDING_KIND, ROLEBINDING_PLURAL
from credward.api.models import CredentialSpec, CredentialStatus, RoleBindingSpec, RoleBindingStatus
from credward.devcluster import ControlPlane
from credward.domain.paths import MID_WILDCARD

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crds")]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SAC = f"{CREDENTIAL_PLURAL}.{GROUP}"
CWRB = f"{ROLEBINDING_PLURAL}.{GROUP}"

Obj = dict[str, Any]


def credential(name: str = "ci-pipeline", **spec: Any) -> Obj:
    """A valid ServiceAccountCredential, with ``spec`` overrides (``None`` removes a field)."""
    body: Obj = {"displayName": "CI pipeline"}
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": CREDENTIAL_KIND,
        "metadata": {"name": name},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def binding(name: str = "ci-pipeline-store", **spec: Any) -> Obj:
    """A valid credward RoleBinding, with ``spec`` overrides (``None`` removes a field)."""
    body: Obj = {
        "serviceAccount": "ci-pipeline",
        "roles": ["builder"],
        "permissions": [{"verbs": ["read"], "path": ["store", "artifacts", "*"]}],
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": ROLEBINDING_KIND,
        "metadata": {"name": name},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def permissions(*items: tuple[list[str], list[str]]) -> list[Obj]:
    return [{"verbs": verbs, "path": path} for verbs, path in items]


@dataclass(frozen=True)
class Invalid:
    """An object the API server must refuse, the field it must name, and (part of) its message."""

    id: str
    obj: Obj
    field: str | None  # None: refused before field validation (e.g. by strict decoding)
    message: str
    # A missing required field is a "blocking" schema error: the API server then skips the CEL rules
    # and says so in a second error.
    blocking: bool = False


INVALID = [
    # --- ServiceAccountCredential ----------------------------------------------------------------
    Invalid(
        "displayName-missing",
        credential(displayName=None, description="x"),
        "spec.displayName",
        "Required value",
        blocking=True,
    ),
    Invalid("displayName-blank", credential(displayName="   "), "spec.displayName", "displayName must not be blank"),
    Invalid(
        "tokenTTL-not-a-duration",
        credential(tokenTTL="5 minutes"),
        "spec.tokenTTL",
        "tokenTTL must be a duration such as '90s', '5m', '1h30m' or '720h'",
    ),
    Invalid(
        "tokenTTL-in-days",
        credential(tokenTTL="1d"),
        "spec.tokenTTL",
        "tokenTTL must be a duration such as '90s', '5m', '1h30m' or '720h'",
    ),
    Invalid(
        "tokenTTL-too-short",
        credential(tokenTTL="10s"),
        "spec.tokenTTL",
        "tokenTTL must be between 30s and 24h, not 10s",
    ),
    Invalid(
        "tokenTTL-too-long",
        credential(tokenTTL="48h"),
        "spec.tokenTTL",
        "tokenTTL must be between 30s and 24h, not 48h",
    ),
    Invalid("lifetime-zero", credential(lifetime="0s"), "spec.lifetime", "lifetime must be longer than zero"),
    Invalid("lifetime-negative", credential(lifetime="-720h"), "spec.lifetime", "lifetime must be a duration such as"),
    Invalid(
        "gracePeriod-equal-to-period",
        credential(rotation={"period": "48h", "gracePeriod": "48h"}),
        "spec.rotation.gracePeriod",
        "rotation.gracePeriod (48h) must be shorter than rotation.period (48h)",
    ),
    Invalid(
        "period-shorter-than-default-gracePeriod",
        credential(rotation={"period": "12h"}),
        "spec.rotation.gracePeriod",
        "rotation.gracePeriod (24h) must be shorter than rotation.period (12h); gracePeriod defaults to 24h",
    ),
    Invalid(
        "maxOverlap-shorter-than-gracePeriod",
        credential(rotation={"gracePeriod": "1h", "maxOverlap": "30m"}),
        "spec.rotation.maxOverlap",
        "rotation.maxOverlap (30m) must not be shorter than rotation.gracePeriod (1h)",
    ),
    Invalid(
        "maxOverlap-shorter-than-default-gracePeriod",
        credential(rotation={"maxOverlap": "1h"}),
        "spec.rotation.maxOverlap",
        "rotation.maxOverlap (1h) must not be shorter than rotation.gracePeriod (24h)",
    ),
    Invalid(
        "maxOverlap-malformed",
        credential(rotation={"maxOverlap": "2 days"}),
        "spec.rotation.maxOverlap",
        "rotation.maxOverlap must be a duration such as",
    ),
    Invalid(
        "quietPeriod-zero",
        credential(rotation={"quietPeriod": "0s"}),
        "spec.rotation.quietPeriod",
        "rotation.quietPeriod must be longer than zero",
    ),
    Invalid("expiryWarning-zero", credential(expiryWarning="0s"), "spec.expiryWarning", "must be longer than zero"),
    Invalid(
        "gracePeriod-zero",
        credential(rotation={"gracePeriod": "0s"}),
        "spec.rotation.gracePeriod",
        "rotation.gracePeriod must be longer than zero",
    ),
    Invalid(
        "period-longer-than-a-year",
        credential(rotation={"period": "9000h"}),
        "spec.rotation.period",
        "rotation.period must be between 1m and 8760h (one year), not 9000h",
    ),
    Invalid(
        "period-zero-blames-the-period-alone",
        credential(rotation={"period": "0s"}),
        "spec.rotation.period",
        "rotation.period must be between 1m and 8760h (one year), not 0s",
    ),
    Invalid(
        "period-not-a-duration",
        credential(rotation={"period": "30 days"}),
        "spec.rotation.period",
        "rotation.period must be a duration such as",
    ),
    Invalid(
        "secretName-not-a-dns-name",
        credential(secretName="CI_Credentials"),
        "spec.secretName",
        "secretName must be a valid Secret name (a DNS subdomain)",
    ),
    Invalid(
        "secretTemplate-reserved-label",
        credential(secretTemplate={"labels": {"credward.io/credential": "other"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels may not use the reserved credward.io/ prefix"
        " (credward sets those itself): credward.io/credential",
    ),
    Invalid(
        "secretTemplate-reserved-annotation-subdomain",
        credential(secretTemplate={"annotations": {"rotation.credward.io/pause": "true"}}),
        "spec.secretTemplate.annotations",
        "secretTemplate.annotations may not use the reserved credward.io/ prefix"
        " (credward sets those itself): rotation.credward.io/pause",
    ),
    Invalid(
        "secretTemplate-managed-by-label",
        credential(secretTemplate={"labels": {"app.kubernetes.io/managed-by": "helm"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels may not set app.kubernetes.io/managed-by",
    ),
    Invalid(
        "secretTemplate-label-value-not-valid",
        credential(secretTemplate={"labels": {"team": "not valid!"}}),
        "spec.secretTemplate.labels[team]",
        "label values must be empty or letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        " (e.g. 'platform'), not 'not valid!'",
    ),
    Invalid(
        "secretTemplate-label-value-ends-with-a-dash",
        credential(secretTemplate={"labels": {"team": "platform-"}}),
        "spec.secretTemplate.labels[team]",
        "not 'platform-'",
    ),
    Invalid(
        "secretTemplate-label-key-with-space",
        credential(secretTemplate={"labels": {"team name": "platform"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels key 'team name' is not a valid label key: a name of at most 63 letters, digits",
    ),
    Invalid(
        "secretTemplate-label-key-name-too-long",
        credential(secretTemplate={"labels": {"example.org/" + "n" * 64: "x"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels key 'example.org/" + "n" * 64 + "' is not a valid label key",
    ),
    Invalid(
        "secretTemplate-label-key-two-slashes",
        credential(secretTemplate={"labels": {"example.org/team/owner": "x"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels key 'example.org/team/owner' is not a valid label key",
    ),
    Invalid(
        "secretTemplate-label-key-prefix-not-dns",
        credential(secretTemplate={"labels": {"Example_Org/team": "x"}}),
        "spec.secretTemplate.labels",
        "secretTemplate.labels key 'Example_Org/team' is not a valid label key",
    ),
    Invalid(
        "secretTemplate-annotation-key-with-space",
        credential(secretTemplate={"annotations": {"team name": "platform"}}),
        "spec.secretTemplate.annotations",
        "secretTemplate.annotations key 'team name' is not a valid annotation key",
    ),
    Invalid(
        "audiences-duplicate",
        credential(audiences=["https://store.example.org", "https://store.example.org"]),
        "spec.audiences[1]",
        'Duplicate value: "https://store.example.org"',
    ),
    Invalid(
        "audience-empty",
        credential(audiences=[""]),
        "spec.audiences[0]",
        "each audience must be a non-empty string without spaces",
    ),
    Invalid(
        "group-without-leading-slash",
        credential(groups=["ci/builders"]),
        "spec.groups[0]",
        "each group must be a path such as '/ci/builders'",
    ),
    Invalid("groups-duplicate", credential(groups=["/ci", "/ci"]), "spec.groups", "groups must be unique"),
    Invalid(
        "name-too-long-for-the-default-secretName",
        credential(name="a" * 242),
        "metadata",
        "metadata.name is too long to derive the default Secret name '<name>-credentials'",
    ),
    Invalid(
        "unknown-field",
        credential(tokenTtl="5m"),
        None,
        'unknown field "spec.tokenTtl"',
    ),
    # --- RoleBinding (credward.io) ---------------------------------------------------------------
    Invalid(
        "grant-verb",
        binding(permissions=permissions((["grant"], ["store"]))),
        "spec.permissions[0].verbs[0]",
        "service accounts can never hold Grant: verb 'grant' is not allowed",
    ),
    Invalid(
        "grant-among-other-verbs",
        binding(permissions=permissions((["read", "write"], ["store"]), (["read", "grant"], ["store", "builds"]))),
        "spec.permissions[1].verbs[1]",
        "service accounts can never hold Grant: verb 'grant' is not allowed",
    ),
    Invalid(
        "unknown-verb",
        binding(permissions=permissions((["delete"], ["store"]))),
        "spec.permissions[0].verbs[0]",
        "verb 'delete' is not allowed: verbs may only be 'read' or 'write'",
    ),
    Invalid(
        "no-verbs",
        binding(permissions=permissions(([], ["store"]))),
        "spec.permissions[0].verbs",
        "verbs must name at least one of 'read' or 'write'",
    ),
    Invalid(
        "empty-path",
        binding(permissions=permissions((["read"], []))),
        "spec.permissions[0].path",
        "path must have at least one part",
    ),
    Invalid(
        "empty-path-part",
        binding(permissions=permissions((["read"], ["store", "", "builds"]))),
        "spec.permissions[0].path[1]",
        "path parts must not be empty",
    ),
    Invalid(
        "path-part-with-slash",
        binding(permissions=permissions((["write"], ["store/builds"]))),
        "spec.permissions[0].path[0]",
        "path parts may contain only letters, digits, '.', '_', '~' and '-', or be '*' as the last part",
    ),
    Invalid(
        "path-wildcard-in-the-middle",
        binding(permissions=permissions((["read"], ["store", "*", "out"]))),
        "spec.permissions[0].path",
        f"path /store/*/out: {MID_WILDCARD}",
    ),
    Invalid(
        "path-wildcard-first-of-two",
        binding(permissions=permissions((["read"], ["*", "*"]))),
        "spec.permissions[0].path",
        "path /*/*: '*' may only be the last part of a path",
    ),
    Invalid(
        "path-part-dot-dot",
        binding(permissions=permissions((["read"], ["store", ".."]))),
        "spec.permissions[0].path[1]",
        "path parts must not be '.' or '..'",
    ),
    Invalid(
        "serviceAccount-missing", binding(serviceAccount=None), "spec.serviceAccount", "Required value", blocking=True
    ),
    Invalid(
        "serviceAccount-in-another-namespace",
        binding(serviceAccount="other/ci-pipeline"),
        "spec.serviceAccount",
        "bindings are same-namespace only: serviceAccount is the name of a ServiceAccountCredential in this"
        " RoleBinding's namespace, not 'other/ci-pipeline'; create the RoleBinding in the credential's namespace"
        " and give just the name 'ci-pipeline'",
    ),
    Invalid(
        "serviceAccount-not-a-name",
        binding(serviceAccount="CI Pipeline"),
        "spec.serviceAccount",
        "serviceAccount must be the name of a ServiceAccountCredential",
    ),
    Invalid(
        "nothing-granted",
        binding(roles=None, permissions=None),
        "spec",
        "a RoleBinding must give at least one role or one permission",
    ),
    Invalid(
        "role-name-with-space",
        binding(roles=["build er"]),
        "spec.roles[0]",
        "role names must start with a letter or digit",
    ),
    Invalid("roles-duplicate", binding(roles=["builder", "builder"]), "spec.roles[1]", 'Duplicate value: "builder"'),
]

VALID = {
    "credential-minimal": credential(),
    "tokenTTL-lower-bound": credential(tokenTTL="30s"),
    "tokenTTL-upper-bound": credential(tokenTTL="24h"),
    "tokenTTL-compound": credential(tokenTTL="1h30m"),
    "tokenTTL-fractional": credential(tokenTTL="1.5h"),
    "short-rotation": credential(rotation={"period": "1m", "gracePeriod": "30s"}),
    "gracePeriod-just-under-period": credential(rotation={"period": "720h", "gracePeriod": "719h59m"}),
    "usage-aware-retirement": credential(
        rotation={"period": "720h", "gracePeriod": "1h", "quietPeriod": "10m", "maxOverlap": "1h"},
        lifetime="2160h",
        expiryWarning="336h",
    ),
    "everything-set": credential(
        description="Builds main",
        lifetime="2160h",
        audiences=["https://store.example.org", "urn:example:builds"],
        groups=["/ci/builders", "/ci"],
        secretName="ci.pipeline-credentials",
        secretTemplate={
            "labels": {
                "team.example.org/owner": "platform",
                "credward.example.org/x": "y",
                "empty-value": "",
                "a": "A.b_c-9",
                "n" * 63: "v" * 63,
            },
            "annotations": {
                "example.org/credward.io": "not reserved: only the prefix is",
                "note": "any text at all, even 'not valid!'",
            },
        },
        revoked=True,
    ),
    "name-at-the-default-secretName-limit": credential(name="a" * 241),
    "long-name-with-secretName": credential(name="a" * 250, secretName="ci"),
    "binding-roles-only": binding(permissions=None),
    "binding-permissions-only": binding(roles=None),
    "binding-wildcard-path": binding(permissions=permissions((["read", "write"], ["*"]))),
    "binding-trailing-wildcard": binding(permissions=permissions((["read"], ["store", "artifacts", "*"]))),
    "binding-dotted-parts": binding(permissions=permissions((["read"], ["store", ".snapshots", "v1.2", "~x"]))),
}


def kubectl_create(plane: ControlPlane, namespace: str, obj: Obj, *, dry_run: bool = True) -> tuple[int, str]:
    args = ["create", "-n", namespace, "-f", "-", "-o", "name"]
    if dry_run:
        args.append("--dry-run=server")
    proc = plane.kubectl(*args, input=json.dumps(obj), check=False)
    return proc.returncode, proc.stderr.strip()


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_object_is_refused_with_its_message(control_plane: ControlPlane, namespace: str, case: Invalid) -> None:
    returncode, stderr = kubectl_create(control_plane, namespace, case.obj)
    assert returncode != 0, f"the API server accepted {case.id}"
    assert case.message in stderr, stderr
    if case.field is not None:
        assert f"{case.field}: " in stderr, stderr
    skipped = "some validation rules were not checked" in stderr
    assert skipped == case.blocking, stderr
    if not case.blocking:
        # One mistake, one error: no unrelated rule fired (kubectl lists several errors as "\n* ...").
        assert "\n* " not in stderr, stderr
        # Every error names its field (a root rule without fieldPath would print "<nil>: ").
        assert "<nil>" not in stderr, stderr


def test_there_are_at_least_15_invalid_cases_each_with_its_own_id() -> None:
    assert len(INVALID) >= 15
    assert len({c.id for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("obj", VALID.values(), ids=VALID.keys())
def test_valid_object_is_accepted(control_plane: ControlPlane, namespace: str, obj: Obj) -> None:
    returncode, stderr = kubectl_create(control_plane, namespace, obj)
    assert returncode == 0, stderr


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_is_accepted(control_plane: ControlPlane, namespace: str, path: Path) -> None:
    control_plane.kubectl("apply", "--server-side", "--field-manager=credward-tests", "-n", namespace, "-f", str(path))
    got = control_plane.kubectl("get", "-n", namespace, "-f", str(path), "-o", "json")
    items = json.loads(got.stdout).get("items") or [json.loads(got.stdout)]
    for item in items:
        model = CredentialSpec if item["kind"] == CREDENTIAL_KIND else RoleBindingSpec
        model.model_validate(item["spec"])


def test_examples_exist() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in example_files()}
    assert kinds == {CREDENTIAL_KIND, ROLEBINDING_KIND}


# --- defaults ------------------------------------------------------------------------------------


def get(plane: ControlPlane, namespace: str, resource: str, name: str) -> Obj:
    obj: Obj = json.loads(plane.kubectl("get", resource, name, "-n", namespace, "-o", "json").stdout)
    return obj


def test_defaults_are_filled_in(control_plane: ControlPlane, namespace: str) -> None:
    returncode, stderr = kubectl_create(control_plane, namespace, credential(), dry_run=False)
    assert returncode == 0, stderr
    spec = get(control_plane, namespace, SAC, "ci-pipeline")["spec"]
    assert spec == {
        "displayName": "CI pipeline",
        "tokenTTL": "5m",
        "expiryWarning": "168h",
        "rotation": {"period": "720h", "gracePeriod": "24h", "quietPeriod": "15m"},
        "revoked": False,
    }
    # maxOverlap has no constant default (twice gracePeriod): the operator derives it.
    assert CredentialSpec.model_validate(spec).rotation.max_overlap_td == timedelta(hours=48)
    # secretName has no constant default ("<name>-credentials"): the operator derives it.
    assert CredentialSpec.model_validate(spec).effective_secret_name("ci-pipeline") == "ci-pipeline-credentials"


def test_partial_rotation_gets_the_other_default(control_plane: ControlPlane, namespace: str) -> None:
    returncode, stderr = kubectl_create(control_plane, namespace, credential(rotation={"period": "48h"}), dry_run=False)
    assert returncode == 0, stderr
    assert get(control_plane, namespace, SAC, "ci-pipeline")["spec"]["rotation"] == {
        "period": "48h",
        "gracePeriod": "24h",
        "quietPeriod": "15m",
    }


# --- immutable fields ----------------------------------------------------------------------------


def patch(plane: ControlPlane, namespace: str, resource: str, name: str, spec: Obj) -> tuple[int, str]:
    proc = plane.kubectl(
        "patch", resource, name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}), check=False
    )
    return proc.returncode, proc.stderr.strip()


def create(plane: ControlPlane, namespace: str, obj: Obj) -> None:
    returncode, stderr = kubectl_create(plane, namespace, obj, dry_run=False)
    assert returncode == 0, stderr


def test_secretName_cannot_change(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential(secretName="ci-secret"))
    returncode, stderr = patch(control_plane, namespace, SAC, "ci-pipeline", {"secretName": "other-secret"})
    assert returncode != 0
    assert "spec.secretName: Forbidden: secretName is immutable" in stderr


def test_secretName_cannot_be_removed_unless_it_is_the_default(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential(secretName="ci-secret"))
    returncode, stderr = patch(control_plane, namespace, SAC, "ci-pipeline", {"secretName": None})
    assert returncode != 0
    assert "spec.secretName is immutable: it may only be added or removed if it equals the default" in stderr


def test_secretName_cannot_be_added_later_with_another_name(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential())
    returncode, stderr = patch(control_plane, namespace, SAC, "ci-pipeline", {"secretName": "other-secret"})
    assert returncode != 0
    assert "spec.secretName: Forbidden: spec.secretName is immutable" in stderr


def test_secretName_may_spell_out_the_default(control_plane: ControlPlane, namespace: str) -> None:
    """Adding or removing the default name changes nothing, so it is allowed (e.g. `kubectl apply` of a fuller file)."""
    create(control_plane, namespace, credential())
    assert patch(control_plane, namespace, SAC, "ci-pipeline", {"secretName": "ci-pipeline-credentials"}) == (0, "")
    assert patch(control_plane, namespace, SAC, "ci-pipeline", {"secretName": None}) == (0, "")


def test_mutable_fields_can_change(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential(secretName="ci-secret"))
    changed = {"tokenTTL": "10m", "revoked": True, "rotation": {"period": "168h", "gracePeriod": "1h"}}
    returncode, stderr = patch(control_plane, namespace, SAC, "ci-pipeline", changed)
    assert returncode == 0, stderr
    create(control_plane, namespace, binding())
    returncode, stderr = patch(control_plane, namespace, CWRB, "ci-pipeline-store", {"roles": ["builder", "publisher"]})
    assert returncode == 0, stderr


def test_rolebinding_serviceAccount_cannot_change(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, binding())
    returncode, stderr = patch(control_plane, namespace, CWRB, "ci-pipeline-store", {"serviceAccount": "nightly"})
    assert returncode != 0
    assert "spec.serviceAccount: Forbidden: serviceAccount is immutable" in stderr


# --- status ----------------------------------------------------------------------------------------


CREDENTIAL_STATUS: Obj = {
    "clientId": "2f0c8a8e-4f0e-4b8e-9a53-6f1f2b6f1c11",
    "identity": "2f0c8a8e-4f0e-4b8e-9a53-6f1f2b6f1c11@clients.credward-security",
    "secretName": "ci-pipeline-credentials",
    "activeSecrets": [
        {"id": "s-2", "createdAt": "2026-01-31T00:00:00Z"},
        {"id": "s-1", "createdAt": "2026-01-01T00:00:00Z", "notAfter": "2026-02-01T00:00:00Z"},
    ],
    "lastRotationTime": "2026-01-31T00:00:00Z",
    "nextRotationTime": "2026-03-02T00:00:00Z",
    "expiresAt": "2027-01-01T00:00:00Z",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "SecretReady",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        },
        {
            "type": "Rotating",
            "status": "True",
            "reason": "GracePeriod",
            "message": "s-1 retires soon",
            "lastTransitionTime": "2026-01-31T00:00:00Z",
        },
    ],
}


def patch_status(plane: ControlPlane, namespace: str, resource: str, name: str, status: Obj, *, dry_run: bool) -> Obj:
    """Merge-patch the status subresource; return the object the API server produced."""
    args = ["patch", resource, name, "-n", namespace, "--subresource=status", "--type=merge", "-o", "json"]
    if dry_run:
        args.append("--dry-run=server")
    obj: Obj = json.loads(plane.kubectl(*args, "-p", json.dumps({"status": status})).stdout)
    return obj


def table_and_object(plane: ControlPlane, namespace: str, resource: str, name: str) -> tuple[dict[str, str], Obj]:
    """``kubectl get`` as a table row (by column name) and the object it shows, read consistently.

    An operator may be running in the same session (its fixture is session-scoped) and write status at
    any time, so the row is only trusted if the object did not change while it was read.
    """
    for _ in range(20):
        before = get(plane, namespace, resource, name)
        header, row = plane.kubectl("get", resource, name, "-n", namespace).stdout.splitlines()
        after = get(plane, namespace, resource, name)
        if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]:
            # Columns are separated by at least two spaces; a column name may contain one ("CLIENT ID").
            starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
            bounds = zip(starts, [*starts[1:], None], strict=True)
            cells = [(header[a:b].strip(), row[a:b].strip()) for a, b in bounds]
            return dict(cells), after
    raise AssertionError(f"{resource}/{name} kept changing while it was read")


def condition_status(obj: Obj, type_: str) -> str:
    conditions = obj.get("status", {}).get("conditions", [])
    return next((c["status"] for c in conditions if c["type"] == type_), "")


def test_status_schema_keeps_a_full_status(control_plane: ControlPlane, namespace: str) -> None:
    """Every status field the operator writes survives the schema (nothing pruned) and parses as the model."""
    create(control_plane, namespace, credential())
    obj = patch_status(control_plane, namespace, SAC, "ci-pipeline", CREDENTIAL_STATUS, dry_run=True)
    assert obj["status"] == CREDENTIAL_STATUS, "the schema pruned or changed part of the status"
    CredentialStatus.model_validate(obj["status"])


def test_credential_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential())
    patch_status(control_plane, namespace, SAC, "ci-pipeline", CREDENTIAL_STATUS, dry_run=False)
    row, obj = table_and_object(control_plane, namespace, "sacred", "ci-pipeline")
    status = obj.get("status", {})
    assert list(row) == ["NAME", "READY", "CLIENT ID", "SECRET", "NEXT ROTATION", "AGE"]
    assert row["NAME"] == "ci-pipeline"
    assert row["READY"] == (condition_status(obj, "Ready") or "<none>")
    assert row["CLIENT ID"] == status.get("clientId", "<none>")
    assert row["SECRET"] == status.get("secretName", "<none>")
    assert row["NEXT ROTATION"] == status.get("nextRotationTime", "<none>")


def test_rolebinding_status_and_printer_columns(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, binding())
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Synced",
                "status": "False",
                "reason": "ServiceUnavailable",
                "message": "retrying",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    obj = patch_status(control_plane, namespace, CWRB, "ci-pipeline-store", status, dry_run=True)
    assert obj["status"] == status
    RoleBindingStatus.model_validate(obj["status"])

    patch_status(control_plane, namespace, CWRB, "ci-pipeline-store", status, dry_run=False)
    row, obj = table_and_object(control_plane, namespace, "cwrb", "ci-pipeline-store")
    assert list(row) == ["NAME", "SERVICE ACCOUNT", "SYNCED", "AGE"]
    assert (row["NAME"], row["SERVICE ACCOUNT"]) == ("ci-pipeline-store", "ci-pipeline")
    assert row["SYNCED"] == (condition_status(obj, "Synced") or "<none>")


def test_category_lists_both_kinds_and_all_does_not(control_plane: ControlPlane, namespace: str) -> None:
    create(control_plane, namespace, credential())
    create(control_plane, namespace, binding())
    names = control_plane.kubectl("get", "credward", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == [f"rolebinding.{GROUP}/ci-pipeline-store", f"serviceaccountcredential.{GROUP}/ci-pipeline"]
    everything = control_plane.kubectl("get", "all", "-n", namespace, "-o", "name").stdout
    assert GROUP not in everything


# --- kubectl explain -----------------------------------------------------------------------------


def explain(plane: ControlPlane, *args: str) -> str:
    """`kubectl explain`, retried: the API server publishes a new CRD's OpenAPI a moment after Established."""
    deadline = time.monotonic() + 60
    while True:
        proc = plane.kubectl("explain", *args, check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            assert proc.returncode == 0, proc.stderr
            return " ".join(proc.stdout.split())  # explain wraps long descriptions
        time.sleep(0.5)


def test_explain_shows_descriptions(control_plane: ControlPlane) -> None:
    rotation = explain(control_plane, "serviceaccountcredentials.spec.rotation")
    assert "How long the previous secret keeps working after a rotation" in rotation
    assert "default 720h" in rotation
    assert "gone unused (no token request authenticated with it" in rotation
    assert "The hard cap" in rotation
    assert "SecretStillInUse names the secret id and how many callers" in rotation
    active = explain(control_plane, "serviceaccountcredentials.status.activeSecrets")
    assert "When a token request last authenticated with this secret" in active
    warning = explain(control_plane, "serviceaccountcredentials.spec.expiryWarning")
    assert "the ExpiringSoon condition turns True" in warning
    top = explain(control_plane, "sacred")
    assert "gives a machine" in top
    permissions = explain(control_plane, "rolebindings.spec.permissions", f"--api-version={API_VERSION}")
    assert "A path grants itself and everything below it" in permissions
    assert '"storage.read:/store/artifacts" (WLCG profile)' in permissions
    path = explain(control_plane, "rolebindings.spec.permissions.path", f"--api-version={API_VERSION}")
    assert "token scopes cannot carry a wildcard in the middle" in path
    ttl = explain(control_plane, "serviceaccountcredentials.spec.tokenTTL")
    assert "caps every token at its own maximum (1h" in ttl
    account = explain(control_plane, "rolebindings.spec.serviceAccount", f"--api-version={API_VERSION}")
    assert "Bindings are same-namespace only" in account
    verbs = explain(control_plane, "rolebindings.spec.permissions.verbs", f"--api-version={API_VERSION}")
    assert "can never give permissions to others" in verbs

"""The CRDs in crds/ are complete and agree with credward.api.models (no server needed).

crds/*.yaml is the source of truth for the API; the pydantic models mirror it. These tests walk
both trees so that a field added to one and forgotten in the other fails here, not in a cluster.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from credward.api import (
    API_VERSION,
    CREDENTIAL_KIND,
    CREDENTIAL_PLURAL,
    GROUP,
    ROLEBINDING_KIND,
    ROLEBINDING_PLURAL,
    VERSION,
)
from credward.api.models import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_ROTATION_PERIOD,
    DEFAULT_TOKEN_TTL,
    CredentialSpec,
    CredentialStatus,
    RoleBindingSpec,
    RoleBindingStatus,
)
from credward.domain import paths
from credward.domain.durations import DURATION_PATTERN, parse_duration
from credward.domain.paths import MID_WILDCARD

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"

Schema = dict[str, Any]


def load_crd(plural: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CRD_DIR / f"{plural}.{GROUP}.yaml").read_text())
    return crd


def root_schema(plural: str) -> Schema:
    (version,) = (v for v in load_crd(plural)["spec"]["versions"] if v["name"] == VERSION)
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def schema_nodes(node: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """Every schema node under ``node`` (properties, list items, map values), with a readable path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def validation_rules(node: Schema) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, child in schema_nodes(node, ""):
        for rule in child.get("x-kubernetes-validations", []):
            yield path, rule


CRDS = [CREDENTIAL_PLURAL, ROLEBINDING_PLURAL]


# --- the CRD objects themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plural", "kind"), [(CREDENTIAL_PLURAL, CREDENTIAL_KIND), (ROLEBINDING_PLURAL, ROLEBINDING_KIND)]
)
def test_crd_identity_matches_the_shared_vocabulary(plural: str, kind: str) -> None:
    crd = load_crd(plural)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["plural"] == plural
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("plural", CRDS)
def test_names_do_not_clash_and_stay_out_of_all(plural: str) -> None:
    names = load_crd(plural)["spec"]["names"]
    assert names["categories"] == ["credward"], "secrets-bearing kinds must not be in the 'all' category"
    # rb/crb are what people type for RBAC's (Cluster)RoleBinding; sa is the core ServiceAccount.
    assert not set(names["shortNames"]) & {"rb", "crb", "sa", "cr", "secret"}


def test_printer_columns() -> None:
    def columns(plural: str) -> list[str]:
        (version,) = load_crd(plural)["spec"]["versions"]
        return [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]

    assert columns(CREDENTIAL_PLURAL) == ["Ready", "Client ID", "Secret", "Next rotation", "Age"]
    assert columns(ROLEBINDING_PLURAL) == ["Service account", "Synced", "Age"]


# --- descriptions, so that `kubectl explain` is useful ------------------------------------------


@pytest.mark.parametrize("plural", CRDS)
def test_every_field_has_a_description(plural: str) -> None:
    nodes = schema_nodes(root_schema(plural), plural)
    # The API server forbids anything on metadata's schema (it documents metadata itself).
    missing = [p for p, node in nodes if not node.get("description", "").strip() and p != f"{plural}.metadata"]
    assert missing == []


# --- CEL rules are well-formed -------------------------------------------------------------------


@pytest.mark.parametrize("plural", CRDS)
def test_every_rule_has_a_single_line_message(plural: str) -> None:
    for path, rule in validation_rules(root_schema(plural)):
        assert rule.get("message", "").strip(), f"rule at {path or '<root>'} has no message: {rule['rule']}"
        assert "\n" not in rule["message"], f"message at {path} spans lines (the API server refuses that)"
        assert "\n" not in rule["rule"].strip(), f"rule at {path} spans lines"
        assert rule.get("reason", "FieldValueInvalid") in {
            "FieldValueInvalid",
            "FieldValueForbidden",
            "FieldValueRequired",
            "FieldValueDuplicate",
        }


def test_grant_is_refused_with_a_message_about_grant() -> None:
    verb = root_schema(ROLEBINDING_PLURAL)["properties"]["spec"]["properties"]["permissions"]["items"]["properties"]
    messages = [r["message"] for r in verb["verbs"]["items"]["x-kubernetes-validations"]]
    assert any("service accounts can never hold Grant" in m for m in messages)
    # No enum: an enum violation is a "blocking" error that would stop the CEL rule (and its message).
    assert "enum" not in verb["verbs"]["items"]


_MATCHES = re.compile(r"matches\(r'([^']*)'\)")


def duration_regexes() -> set[str]:
    spec = root_schema(CREDENTIAL_PLURAL)["properties"]["spec"]
    found: set[str] = set()
    for path, rule in validation_rules(spec):
        if any(name in path for name in ("lifetime", "tokenTTL", "rotation")):
            found.update(_MATCHES.findall(rule["rule"]))
    return found


DURATION_SAMPLES = ["90s", "5m", "1h30m", "720h", "1.5h", "250ms", "2h45m30s", "0s"]
NOT_ADMITTED = ["", "5", "5 m", "-5m", "+5m", "5d", "1w", "m5", "5M", "1h 30m", "12345678h", "P1D", "5m" * 5]


def test_every_duration_field_uses_one_regex() -> None:
    assert len(duration_regexes()) == 1


@pytest.mark.parametrize("text", DURATION_SAMPLES)
def test_what_the_api_server_admits_as_a_duration_credward_parses(text: str) -> None:
    (crd_regex,) = duration_regexes()
    assert re.fullmatch(crd_regex, text)
    assert re.fullmatch(DURATION_PATTERN, text)
    if text != "0s":  # zero is well-formed; the CRD refuses it with its own rule, parse_duration too
        assert parse_duration(text).total_seconds() > 0


@pytest.mark.parametrize("text", NOT_ADMITTED)
def test_malformed_durations_do_not_match_the_crd_regex(text: str) -> None:
    (crd_regex,) = duration_regexes()
    assert not re.fullmatch(crd_regex, text)


# --- the CRDs and the pydantic models agree ------------------------------------------------------


def field_key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X`` (serializers do not change the schema type)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def compare(annotation: Any, node: Schema, path: str) -> list[str]:
    """Differences between a model annotation and a schema node (empty when they agree)."""
    annotation = unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return compare_model(annotation, node, path)
    if origin is tuple:
        item, ellipsis = typing.get_args(annotation)
        assert ellipsis is Ellipsis
        if node.get("type") != "array":
            return [f"{path}: model has a list, schema has {node.get('type')}"]
        return compare(item, node["items"], f"{path}[]")
    if origin is dict:
        if node.get("type") != "object" or "additionalProperties" not in node:
            return [f"{path}: model has a map, schema has no additionalProperties"]
        return compare(typing.get_args(annotation)[1], node["additionalProperties"], f"{path}{{}}")
    if origin is Literal:
        values = typing.get_args(annotation)
        if node.get("type") != "string":
            return [f"{path}: model has a Literal, schema has {node.get('type')}"]
        if "enum" in node and set(node["enum"]) != set(values):
            return [f"{path}: model allows {sorted(values)}, schema enum is {sorted(node['enum'])}"]
        return []
    expected = {
        str: ("string", None),
        bool: ("boolean", None),
        int: ("integer", None),
        datetime: ("string", "date-time"),
    }
    if annotation not in expected:
        return [f"{path}: no rule to compare {annotation!r}"]
    want_type, want_format = expected[annotation]
    if node.get("type") != want_type or (want_format and node.get("format") != want_format):
        return [f"{path}: model has {annotation.__name__}, schema has {node.get('type')}/{node.get('format')}"]
    return []


def compare_model(model: type[BaseModel], node: Schema, path: str) -> list[str]:
    if node.get("type") != "object" or "properties" not in node:
        return [f"{path}: model {model.__name__} is an object, schema is not"]
    fields = {field_key(n, f): f for n, f in model.model_fields.items()}
    problems = [f"{path}.{k}: in the model, not in the CRD" for k in sorted(fields.keys() - node["properties"].keys())]
    problems += [f"{path}.{k}: in the CRD, not in the model" for k in sorted(node["properties"].keys() - fields.keys())]
    required_by_model = {k for k, f in fields.items() if f.is_required()}
    if not required_by_model <= set(node.get("required", [])):
        extra = sorted(required_by_model - set(node.get("required", [])))
        problems.append(f"{path}: the model requires {extra} but the API server does not guarantee them")
    for key in sorted(fields.keys() & node["properties"].keys()):
        problems += compare(fields[key].annotation, node["properties"][key], f"{path}.{key}")
    return problems


@pytest.mark.parametrize(
    ("plural", "part", "model"),
    [
        (CREDENTIAL_PLURAL, "spec", CredentialSpec),
        (CREDENTIAL_PLURAL, "status", CredentialStatus),
        (ROLEBINDING_PLURAL, "spec", RoleBindingSpec),
        (ROLEBINDING_PLURAL, "status", RoleBindingStatus),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_schema_and_model_agree(plural: str, part: str, model: type[BaseModel]) -> None:
    assert compare_model(model, root_schema(plural)["properties"][part], f"{plural}.{part}") == []


def test_the_walk_notices_a_missing_field() -> None:
    """Guard the guard: a schema without a field the model has is reported."""
    spec = root_schema(CREDENTIAL_PLURAL)["properties"]["spec"]
    del spec["properties"]["rotation"]["properties"]["gracePeriod"]
    assert compare_model(CredentialSpec, spec, "spec") == ["spec.rotation.gracePeriod: in the model, not in the CRD"]


def test_schema_defaults_are_the_model_defaults() -> None:
    spec = root_schema(CREDENTIAL_PLURAL)["properties"]["spec"]["properties"]
    assert spec["tokenTTL"]["default"] == DEFAULT_TOKEN_TTL == "5m"
    assert spec["rotation"]["properties"]["period"]["default"] == DEFAULT_ROTATION_PERIOD == "720h"
    assert spec["rotation"]["properties"]["gracePeriod"]["default"] == DEFAULT_GRACE_PERIOD == "24h"
    assert spec["rotation"]["default"] == {}, "rotation defaults must apply when rotation is omitted"
    assert spec["revoked"]["default"] is CredentialSpec.model_validate({"displayName": "x"}).revoked is False


# --- the examples are what the models expect ---------------------------------------------------


def example_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def test_examples_parse_as_models() -> None:
    kinds = []
    for obj in example_objects():
        assert obj["apiVersion"] == API_VERSION
        assert "namespace" not in obj["metadata"], "examples apply to whatever namespace kubectl uses"
        models: dict[str, type[BaseModel]] = {CREDENTIAL_KIND: CredentialSpec, ROLEBINDING_KIND: RoleBindingSpec}
        model = models[obj["kind"]]
        model.model_validate(obj["spec"])
        kinds.append(obj["kind"])
    assert sorted(set(kinds)) == [ROLEBINDING_KIND, CREDENTIAL_KIND]


# --- the one path rule, in the CRD's own words -----------------------------------------------------


def permission_schema() -> Schema:
    spec = root_schema(ROLEBINDING_PLURAL)["properties"]["spec"]
    node: Schema = spec["properties"]["permissions"]["items"]
    return node


def test_the_crd_refuses_a_mid_path_wildcard_with_the_domain_message() -> None:
    path = permission_schema()["properties"]["path"]
    (rule,) = [r for r in path["x-kubernetes-validations"] if "'*'" in r["rule"]]
    assert rule["message"] == MID_WILDCARD
    assert rule["messageExpression"].endswith(f': {MID_WILDCARD}"')
    assert "a path already grants itself and everything below it" in MID_WILDCARD
    assert "token scopes cannot carry a wildcard in the middle" in MID_WILDCARD


def test_the_crd_path_part_is_the_domain_part() -> None:
    part = permission_schema()["properties"]["path"]["items"]
    (crd_regex,) = {m for _, r in validation_rules(part) for m in _MATCHES.findall(r["rule"])}
    assert part["maxLength"] == paths.MAX_PART_LENGTH
    assert permission_schema()["properties"]["path"]["maxItems"] == paths.MAX_PARTS
    for sample in ["store", "a.b", "v1.2", "~x", "_", "-", "x" * 64, "a b", "a/b", "%2F", "", "caf\u00e9", "*"]:
        crd = bool(re.fullmatch(crd_regex, sample)) and len(sample) <= part["maxLength"]
        assert crd is bool(paths.PART_RE.fullmatch(sample)), sample


def test_no_description_promises_a_one_part_wildcard_or_a_literal_star_scope() -> None:
    for plural in CRDS:
        for path, node in schema_nodes(root_schema(plural), plural):
            text = node.get("description", "")
            assert "exactly one part" not in text, path
            assert "any one part" not in text, path
            assert not re.search(r"(read|modify|write):/\S*\*", text), path
    assert "everything below it" in permission_schema()["properties"]["path"]["description"]


def test_examples_use_no_mid_path_wildcard() -> None:
    for obj in example_objects():
        for permission in obj["spec"].get("permissions", []):
            assert "*" not in permission["path"][:-1], permission
            paths.normalize(permission["path"])


# --- issue 12 §4: refusals that name their field and say what to do --------------------------------


def credential_spec() -> Schema:
    node: Schema = root_schema(CREDENTIAL_PLURAL)["properties"]["spec"]
    return node


def test_every_root_rule_names_its_field() -> None:
    """A rule on the root without fieldPath is reported as '<nil>: ...'."""
    for plural in CRDS:
        for rule in root_schema(plural).get("x-kubernetes-validations", []):
            assert rule.get("fieldPath"), rule["rule"]


def test_secret_template_keys_and_values_follow_kubernetes_rules() -> None:
    template = credential_spec()["properties"]["secretTemplate"]["properties"]
    key_regexes = {
        m
        for kind in ("labels", "annotations")
        for r in template[kind]["x-kubernetes-validations"]
        for m in _MATCHES.findall(r["rule"])
    }
    value_rules = template["labels"]["additionalProperties"]["x-kubernetes-validations"]
    (value_regex,) = {m for r in value_rules for m in _MATCHES.findall(r["rule"])}
    (key_regex,) = key_regexes  # labels and annotations share the key rule
    good_keys = ["team", "a", "team.example.org/owner", "app.kubernetes.io/part-of", "n" * 63, "a_b.c-d"]
    bad_keys = ["team name", "-team", "team-", "a/b/c", "Example_Org/x", "/x", "x/", "n" * 64, "", "caf\u00e9"]
    for key in good_keys:
        assert re.fullmatch(key_regex, key), key
    for key in bad_keys:
        assert not re.fullmatch(key_regex, key), key
    for value in ["", "platform", "A.b_c-9", "v" * 63]:
        assert re.fullmatch(value_regex, value), value
    for value in ["not valid!", "platform-", ".x", "a b", "caf\u00e9"]:
        assert not re.fullmatch(value_regex, value), value
    assert template["labels"]["additionalProperties"]["maxLength"] == 63


def test_reserved_secret_template_keys_stay_refused() -> None:
    template = credential_spec()["properties"]["secretTemplate"]["properties"]
    label_rules = " ".join(r["rule"] for r in template["labels"]["x-kubernetes-validations"])
    annotation_rules = " ".join(r["rule"] for r in template["annotations"]["x-kubernetes-validations"])
    assert "credward.io/" in label_rules
    assert "app.kubernetes.io/managed-by" in label_rules
    assert "credward.io/" in annotation_rules


def test_token_ttl_says_the_service_caps_it() -> None:
    description = credential_spec()["properties"]["tokenTTL"]["description"]
    assert "caps every token at its own maximum (1h" in description
    assert "effective TTL" in description


def test_the_grace_period_rule_waits_for_a_valid_period() -> None:
    """rotation.period: 0s must be blamed on the period alone, not first on gracePeriod."""
    rotation = credential_spec()["properties"]["rotation"]
    cross = rotation["x-kubernetes-validations"][0]
    assert ".gracePeriod" in cross["fieldPath"]
    period_range = rotation["properties"]["period"]["x-kubernetes-validations"][1]["rule"]
    for bound in re.findall(r"duration\('([^']+)'\)", period_range):
        assert f"duration('{bound}')" in cross["rule"]


def test_service_account_names_no_namespace() -> None:
    account = root_schema(ROLEBINDING_PLURAL)["properties"]["spec"]["properties"]["serviceAccount"]
    first, second = account["x-kubernetes-validations"][:2]
    assert first["rule"] == "!self.contains('/')"
    assert first["message"].startswith("bindings are same-namespace only")
    assert second["rule"].startswith("self.contains('/') ||"), "the name rule must not fire as well"
    assert "same-namespace only" in account["description"]

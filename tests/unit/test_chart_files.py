"""The chart's files checked without rendering: values documented and typed, RBAC rules explained, CRDs in sync."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from tests.support.helm import CHART_DIR

pytestmark = pytest.mark.unit


def _objects(schema: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(where, schema)] if "properties" in schema else []
    for key, sub in (schema.get("properties") or {}).items():
        found += _objects(sub, f"{where}.{key}")
    return found


def test_schema_closes_every_object_and_covers_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for where, obj in _objects(schema):
        assert obj.get("additionalProperties") is False, where or "(root)"

    def walk(values: Any, node: dict[str, Any], where: str) -> None:
        if isinstance(values, dict) and "properties" in node:
            for key, value in values.items():
                assert key in node["properties"], f"{where}.{key} is in values.yaml but not in the schema"
                walk(value, node["properties"][key], f"{where}.{key}")

    walk(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), schema, "")


def test_every_value_has_a_comment() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w-]*:", line):
            previous = lines[number - 1].strip()
            assert previous.startswith("#"), f"values.yaml line {number + 1} ({line.strip()}) has no comment"


@pytest.mark.parametrize(
    "template", [*sorted(p.name for p in (CHART_DIR / "templates").glob("*rbac*.yaml")), "aggregated-roles.yaml"]
)
def test_every_rbac_rule_says_why(template: str) -> None:
    lines = (CHART_DIR / "templates" / template).read_text().splitlines()
    rules = [n for n, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert rules
    for n in rules:
        above = next(line.strip() for line in reversed(lines[:n]) if not line.strip().startswith("{{"))
        assert above.startswith("#"), f"{template} line {n + 1}: a rule without a comment saying why"


def test_chart_crds_are_a_copy_of_crds() -> None:
    repo, chart = CHART_DIR.parent.parent / "crds", CHART_DIR / "files" / "crds"
    names = sorted(p.name for p in repo.glob("*.yaml"))
    assert names == sorted(p.name for p in chart.glob("*.yaml")), "run `make crds`"
    for name in names:
        assert (chart / name).read_bytes() == (repo / name).read_bytes(), f"{name} differs: run `make crds`"

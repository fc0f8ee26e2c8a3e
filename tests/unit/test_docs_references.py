"""The README and docs/ name only code that exists: a renamed or deleted module leaves no stale description behind."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = {"api", "cli", "client", "devcluster", "domain", "errors", "operator", "security", "webhook"}
REFERENCE = re.compile(r"`(credward(?:\.[A-Za-z_]\w*)+)")


def references() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for name in REFERENCE.findall(doc.read_text()):
            if name.split(".")[1] in PACKAGES:  # not hostnames or annotations such as credward.io/...
                found.add((doc.name, name))
    return sorted(found)


def resolves(dotted: str) -> bool:
    """``dotted`` is a module, or an attribute reached from the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


def test_the_docs_name_some_code() -> None:
    assert len(references()) >= 10


@pytest.mark.parametrize(("doc", "name"), references())
def test_each_named_module_or_function_exists(doc: str, name: str) -> None:
    assert resolves(name), f"{doc} names {name}, which does not exist"

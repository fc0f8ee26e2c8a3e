"""Permission -> scope rendering for both profiles, parsing, and the down-scoping rule."""

from __future__ import annotations

import pytest

from credward.domain.scopes import (
    Scope,
    ScopeProfile,
    downscope,
    parse_scope,
    parse_scope_param,
    render_permissions,
    render_scopes,
)
from credward.errors import InvalidScope

pytestmark = pytest.mark.unit

WLCG, SCI = ScopeProfile.WLCG, ScopeProfile.SCITOKENS


def test_render_wlcg_and_scitokens() -> None:
    perms = [(("read", "write"), ("data", "run1")), (("read",), ())]
    assert render_scopes(render_permissions(WLCG, perms)) == (
        "storage.read:/data/run1 storage.modify:/data/run1 storage.read:/"
    )
    assert render_scopes(render_permissions(SCI, perms)) == "read:/data/run1 write:/data/run1 read:/"


def test_render_deduplicates() -> None:
    perms = [(("read",), ("a",)), (("read",), ("a",))]
    assert render_permissions(WLCG, perms) == (Scope("storage.read", ("a",)),)


@pytest.mark.parametrize("verb", ["grant", "delete", ""])
def test_grant_and_unknown_verbs_are_refused(verb: str) -> None:
    with pytest.raises(InvalidScope):
        render_permissions(WLCG, [((verb,), ("a",))])


@pytest.mark.parametrize(
    ("held", "wanted", "covered"),
    [
        (("data",), ("data",), True),
        (("data",), ("data", "x", "y"), True),
        ((), ("anything",), True),
        (("data", "x"), ("data",), False),
        (("data",), ("other",), False),
        (("*", "out"), ("run1", "out", "f"), True),
        (("*", "out"), ("*", "out"), True),
        (("run1",), ("*",), False),
        (("data", "*"), ("data",), False),
    ],
)
def test_covers_is_prefix_with_single_part_wildcard(
    held: tuple[str, ...], wanted: tuple[str, ...], covered: bool
) -> None:
    assert Scope("read", held).covers(Scope("read", wanted)) is covered


def test_covers_needs_the_same_action() -> None:
    assert not Scope("storage.modify", ("a",)).covers(Scope("storage.read", ("a",)))


def test_parse_normalises_slashes() -> None:
    assert parse_scope(WLCG, "storage.read:/a//b/") == Scope("storage.read", ("a", "b"))
    assert parse_scope(SCI, "write:/") == Scope("write", ())


@pytest.mark.parametrize(
    "text",
    [
        "storage.read",
        "storage.read:relative",
        "read:/a",
        "storage.stage:/a",
        "storage.read:/a/../b",
        "storage.read:/./a",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(WLCG, text)


def test_scope_param_rules() -> None:
    assert len(parse_scope_param(WLCG, "storage.read:/a storage.read:/a")) == 1
    for bad in ("storage.read:/a  storage.read:/b", " storage.read:/a", "x" * 2000):
        with pytest.raises(InvalidScope):
            parse_scope_param(WLCG, bad)


def test_downscope() -> None:
    held = (Scope("read", ("data",)), Scope("write", ("data", "out")))
    assert downscope(held, None) == held
    assert downscope(held, (Scope("read", ("data", "x")),)) == (Scope("read", ("data", "x")),)
    with pytest.raises(InvalidScope):
        downscope(held, (Scope("write", ("data",)),))

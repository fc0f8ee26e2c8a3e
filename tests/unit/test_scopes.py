"""Permission -> scope rendering for both profiles, parsing, down-scoping, and the one path rule."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from credward.api.models import Permission
from credward.domain import paths
from credward.domain.scopes import (
    Scope,
    ScopeProfile,
    downscope,
    parse_scope,
    parse_scope_param,
    render_permissions,
    render_scopes,
    verb_action,
)
from credward.errors import InvalidScope, InvalidSpec, PathError

pytestmark = pytest.mark.unit

WLCG, SCI = ScopeProfile.WLCG, ScopeProfile.SCITOKENS
PART_CHARS = "ABCXYZabcxyz0189._~-"


# --- rendering ------------------------------------------------------------------------------------


def test_render_wlcg_and_scitokens() -> None:
    perms = [(("read", "write"), ("data", "run1")), (("read",), ("*",))]
    assert render_scopes(render_permissions(WLCG, perms)) == (
        "storage.read:/data/run1 storage.modify:/data/run1 storage.read:/"
    )
    assert render_scopes(render_permissions(SCI, perms)) == "read:/data/run1 write:/data/run1 read:/"


def test_a_trailing_wildcard_renders_as_the_prefix_itself() -> None:
    """The issue-6 case: [store, artifacts, "*"] was 'storage.read:/store/artifacts/*' (a literal '*' directory)."""
    (scope,) = render_permissions(WLCG, [(("read",), ("store", "artifacts", "*"))])
    assert scope.render() == "storage.read:/store/artifacts"
    assert render_permissions(WLCG, [(("read",), ("store", "artifacts"))]) == (scope,)


def test_a_mid_path_wildcard_is_refused_with_the_reason() -> None:
    with pytest.raises(PathError, match=r"path /store/\*/out: '\*' may only be the last part") as caught:
        render_permissions(WLCG, [(("read",), ("store", "*", "out"))])
    assert "a path already grants itself and everything below it" in str(caught.value)
    assert isinstance(caught.value, InvalidSpec)
    assert isinstance(caught.value, ValueError)


def test_render_deduplicates_after_normalizing() -> None:
    perms = [(("read",), ("a",)), (("read",), ("a", "*"))]
    assert render_permissions(WLCG, perms) == (Scope("storage.read", ("a",)),)


@pytest.mark.parametrize("verb", ["grant", "delete", ""])
def test_grant_and_unknown_verbs_are_refused(verb: str) -> None:
    with pytest.raises(InvalidScope):
        render_permissions(WLCG, [((verb,), ("a",))])


# --- covering (down-scoping) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "wanted", "covered"),
    [
        (("data",), ("data",), True),
        (("data",), ("data", "x", "y"), True),
        ((), ("anything",), True),
        ((), (), True),
        (("data", "x"), ("data",), False),
        (("data",), ("other",), False),
        (("store",), ("storefront",), False),
        (("store",), ("store.old",), False),
        (("a", "b"), ("a", "bc", "d"), False),
    ],
)
def test_covers_is_a_prefix_part_by_part(held: tuple[str, ...], wanted: tuple[str, ...], covered: bool) -> None:
    assert Scope("read", held).covers(Scope("read", wanted)) is covered


def test_covers_needs_the_same_action() -> None:
    assert not Scope("storage.modify", ("a",)).covers(Scope("storage.read", ("a",)))


def test_downscope() -> None:
    held = (Scope("read", ("data",)), Scope("write", ("data", "out")))
    assert downscope(held, None) == held
    assert downscope(held, (Scope("read", ("data", "x")),)) == (Scope("read", ("data", "x")),)
    with pytest.raises(InvalidScope, match="exceeds what the client holds"):
        downscope(held, (Scope("write", ("data",)),))
    with pytest.raises(InvalidScope):
        downscope((Scope("read", ("store",)),), parse_scope_param(SCI, "read:/storefront"))


# --- parsing requests -----------------------------------------------------------------------------


def test_parse() -> None:
    assert parse_scope(WLCG, "storage.read:/a/b") == Scope("storage.read", ("a", "b"))
    assert parse_scope(SCI, "write:/") == Scope("write", ())


@pytest.mark.parametrize(
    "text",
    [
        "storage.read",
        "storage.read:",
        "storage.read:relative",
        "read:/a",
        "storage.stage:/a",
        "storage.read:/a/../b",
        "storage.read:/./a",
        "storage.read:/a//b",
        "storage.read:/a/",
        "storage.read:/a/*",
        "storage.read:/*/b",
        "storage.read:/a%2Fb",
        "storage.read:/%2e%2e",
        "storage.read:/a\tb",
        "storage.read:/caf\u00e9",
    ],
)
def test_parse_refuses_what_credward_never_renders(text: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(WLCG, text)


def test_error_descriptions_hold_only_safe_characters() -> None:
    """RFC 6749 §5.2: error_description is printable ASCII without '"' or '\\'."""
    with pytest.raises(InvalidScope) as caught:
        parse_scope(WLCG, 'storage.read:/a"\\\u00e9' + "x" * 100)
    description = caught.value.description
    assert re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]*", description), description
    assert len(description) < 400


def test_scope_param_rules() -> None:
    assert len(parse_scope_param(WLCG, "storage.read:/a storage.read:/a")) == 1
    for bad in ("storage.read:/a  storage.read:/b", " storage.read:/a", "x" * 2000):
        with pytest.raises(InvalidScope):
            parse_scope_param(WLCG, bad)


# --- properties: one rule, injective and safe rendering --------------------------------------------

parts = st.text(PART_CHARS, min_size=1, max_size=8).filter(lambda p: p not in (".", ".."))
normal_paths = st.lists(parts, max_size=5).map(tuple)
verbs = st.sampled_from(["read", "write"])
grants = st.frozensets(st.tuples(verbs, normal_paths), max_size=12)
profiles = st.sampled_from(list(ScopeProfile))


def rendered(profile: ScopeProfile, grant_set: frozenset[tuple[str, tuple[str, ...]]]) -> str:
    return render_scopes(render_permissions(profile, [((verb,), path) for verb, path in grant_set]))


@given(profiles, grants)
def test_rendering_is_inverted_by_parsing(profile: ScopeProfile, grant_set: frozenset[Any]) -> None:
    text = rendered(profile, grant_set)
    tokens = text.split(" ") if text else []
    assert len(tokens) == len(grant_set), "one scope token per (verb, path)"
    expected = {Scope(verb_action(profile, verb), path) for verb, path in grant_set}
    assert (set(parse_scope_param(profile, text)) if text else set()) == expected


@given(profiles, grants, grants)
def test_distinct_grants_render_to_distinct_scopes(profile: ScopeProfile, a: frozenset[Any], b: frozenset[Any]) -> None:
    if a != b:
        assert set(rendered(profile, a).split(" ")) != set(rendered(profile, b).split(" "))


@given(normal_paths, normal_paths)
def test_covers_is_the_profiles_string_rule(held: tuple[str, ...], wanted: tuple[str, ...]) -> None:
    """WLCG/SciTokens validators: a held path matches itself and anything below it after a '/'."""
    h, w = paths.render(held), paths.render(wanted)
    assert paths.covers(held, wanted) is (h == "/" or w == h or w.startswith(h + "/"))


@given(normal_paths)
def test_a_trailing_wildcard_means_the_path_itself(path: tuple[str, ...]) -> None:
    assert paths.normalize((*path, "*")) == paths.normalize(path or ("*",)) == path


@given(st.lists(parts, min_size=1, max_size=4), st.lists(parts, min_size=1, max_size=4))
def test_a_wildcard_before_the_last_part_is_always_refused(head: list[str], tail: list[str]) -> None:
    with pytest.raises(PathError):
        paths.normalize([*head, "*", *tail])


# Hostile input, mostly valid so that much of it passes: the separators and escapes a scope string or URL could misread.
HOSTILE = ["*", "/", " ", "%2F", "%20", ".", "..", "a b", "a/b", "", "\u00e9", "a\x00", "a:b", '"']
hostile_parts = st.one_of(parts, parts, parts, st.just("*"), st.sampled_from(HOSTILE), st.text(max_size=4))
hostile_verbs = st.one_of(
    st.lists(verbs, min_size=1, max_size=2, unique=True),
    st.lists(st.one_of(verbs, st.sampled_from(["grant", "READ", "read ", ""]), st.text(max_size=4)), max_size=3),
)
SCOPE_TOKEN = re.compile(r"(storage\.read|storage\.modify|read|write):/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?")


@given(st.lists(st.tuples(hostile_verbs, st.lists(hostile_parts, max_size=5)), max_size=8), profiles)
def test_whatever_passes_validation_renders_one_safe_token_per_grant(
    raw: list[tuple[list[str], list[str]]], profile: ScopeProfile
) -> None:
    accepted: list[Permission] = []
    for verb_list, path in raw:
        try:
            accepted.append(Permission.model_validate_json(json.dumps({"verbs": verb_list, "path": path}), strict=True))
        except ValidationError:
            continue
    text = render_scopes(render_permissions(profile, [(p.verbs, p.path) for p in accepted]))
    tokens = text.split(" ") if text else []
    assert len(tokens) == len({(v, p.path) for p in accepted for v in p.verbs})
    for token in tokens:
        assert SCOPE_TOKEN.fullmatch(token), token
        assert "*" not in token
        assert all(part not in (".", "..") for part in token.partition(":")[2].split("/"))

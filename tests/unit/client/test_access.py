"""A token's scope claim read as grants, and the one path rule (via credward.domain.paths) for both profiles."""

from __future__ import annotations

import pytest

from credward.client.access import ALL_PROFILES, Grant, check_verb, first_grant, parse_grants, verbs_of
from credward.domain.scopes import ScopeProfile

pytestmark = pytest.mark.unit


def allows(scope: str, verb: str, path: tuple[str, ...], actions: dict[str, str] = ALL_PROFILES) -> str | None:
    grant = first_grant(parse_grants(scope, actions), verb, path)
    return grant.scope if grant else None


def test_both_profiles_map_to_the_same_verbs() -> None:
    grants = parse_grants("storage.read:/a storage.modify:/b read:/c write:/d")
    assert [(g.verb, g.path) for g in grants] == [
        ("read", ("a",)),
        ("write", ("b",)),
        ("read", ("c",)),
        ("write", ("d",)),
    ]


@pytest.mark.parametrize(
    ("scope", "verb", "path", "granted"),
    [
        ("storage.read:/data", "read", ("data",), True),  # a path grants itself
        ("storage.read:/data", "read", ("data", "x", "y"), True),  # and everything below it
        ("storage.read:/data", "read", ("database",), False),  # part by part, not by characters
        ("storage.read:/data/x", "read", ("data",), False),  # not above it
        ("storage.read:/", "read", ("any", "thing"), True),  # the root grants all
        ("storage.read:/data", "write", ("data",), False),  # verbs do not mix
        ("storage.modify:/data", "read", ("data",), False),  # write does not imply read
        ("read:/data", "read", ("data", "x"), True),
        ("write:/data", "write", ("data", "x"), True),
    ],
)
def test_prefix_rule(scope: str, verb: str, path: tuple[str, ...], granted: bool) -> None:
    assert (allows(scope, verb, path) is not None) is granted


@pytest.mark.parametrize(
    "scope",
    [
        "storage.read:/data/*",  # a wildcard is not a path part (the renderer never emits one)
        "storage.read:/data/",  # trailing slash: refused rather than guessed
        "storage.read:/a//b",
        "storage.read:data",  # relative
        "storage.read",  # no path
        "storage.read:/../etc",
        "storage.create:/data",  # an action credward does not map to read/write
        "openid",
        "",
    ],
)
def test_unreadable_scopes_grant_nothing(scope: str) -> None:
    assert parse_grants(scope) == ()


def test_non_string_scope_claims_grant_nothing() -> None:
    assert parse_grants(None) == ()
    assert parse_grants(["storage.read:/data"]) == ()


def test_profiles_can_be_restricted() -> None:
    wlcg = verbs_of([ScopeProfile.WLCG])
    assert allows("read:/data", "read", ("data",), wlcg) is None
    assert allows("storage.read:/data", "read", ("data",), wlcg) == "storage.read:/data"
    sci = verbs_of([ScopeProfile.SCITOKENS])
    assert allows("storage.read:/data", "read", ("data",), sci) is None


def test_first_matching_grant_is_named() -> None:
    grants = parse_grants("storage.read:/data storage.read:/data/x")
    assert first_grant(grants, "read", ("data", "x", "1")) == Grant("read", ("data",), "storage.read:/data")


def test_verbs_are_read_and_write_only() -> None:
    assert check_verb("read") == "read"
    with pytest.raises(ValueError, match="grant"):
        check_verb("grant")

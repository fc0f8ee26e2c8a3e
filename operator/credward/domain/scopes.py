"""Permissions -> OAuth2 scope strings, and the down-scoping check.

A permission is verbs (``read``/``write``) over a path of parts, where ``*``
matches exactly one part. Two token profiles render it:

* WLCG: ``storage.read:/a/b`` and ``storage.modify:/a/b``
* SciTokens: ``read:/a/b`` and ``write:/a/b``

Both profiles give a scope's path prefix semantics: ``read:/a`` covers
``/a/b/c``. A requested scope is granted only if some held scope covers it
(same action, held path a prefix of the requested one, ``*`` in the held path
matching any one part). A ``*`` in a request is only covered by a ``*`` in the
same place, so a client cannot widen its own grant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from credward.errors import InvalidScope

WILDCARD = "*"


class ScopeProfile(StrEnum):
    WLCG = "wlcg"
    SCITOKENS = "scitokens"


# verb -> action name, per profile
_ACTIONS: dict[ScopeProfile, dict[str, str]] = {
    ScopeProfile.WLCG: {"read": "storage.read", "write": "storage.modify"},
    ScopeProfile.SCITOKENS: {"read": "read", "write": "write"},
}

_MAX_SCOPE_LENGTH = 1024
_MAX_SCOPES = 64


@dataclass(frozen=True, slots=True)
class Scope:
    """One authorization: an action (profile-specific name) over a path of parts."""

    action: str
    path: tuple[str, ...]

    def render(self) -> str:
        return f"{self.action}:/{'/'.join(self.path)}"

    def covers(self, other: Scope) -> bool:
        """True if this scope authorizes everything ``other`` does (down-scoping check)."""
        if self.action != other.action or len(self.path) > len(other.path):
            return False
        for held, wanted in zip(self.path, other.path, strict=False):
            if held == WILDCARD:
                continue
            if wanted == WILDCARD or held != wanted:
                return False
        return True


def verb_action(profile: ScopeProfile, verb: str) -> str:
    """The profile's action name for a verb; ``grant`` and unknown verbs are refused."""
    try:
        return _ACTIONS[profile][verb]
    except KeyError:
        raise InvalidScope(f"verb {verb!r} cannot be held by a service account") from None


def render_permissions(
    profile: ScopeProfile, permissions: Iterable[tuple[Iterable[str], Iterable[str]]]
) -> tuple[Scope, ...]:
    """Scopes for ``(verbs, path)`` pairs, deduplicated, in first-seen order."""
    out: dict[Scope, None] = {}
    for verbs, path in permissions:
        parts = tuple(path)
        for verb in verbs:
            out[Scope(verb_action(profile, verb), parts)] = None
    return tuple(out)


def parse_scope(profile: ScopeProfile, text: str) -> Scope:
    """Parse ``action:/path`` of the given profile; raise :class:`InvalidScope` otherwise."""
    action, sep, path = text.partition(":")
    if not sep or action not in _ACTIONS[profile].values():
        raise InvalidScope(f"scope {_shown(text)} is not a {profile.value} scope such as {_example(profile)}")
    if not path.startswith("/"):
        raise InvalidScope(f"scope {_shown(text)} must have an absolute path")
    parts = tuple(p for p in path.split("/") if p)
    if any(p in (".", "..") for p in parts):
        raise InvalidScope(f"scope {_shown(text)} must not contain '.' or '..' path parts")
    return Scope(action, parts)


def parse_scope_param(profile: ScopeProfile, value: str) -> tuple[Scope, ...]:
    """Parse the space-delimited ``scope`` request parameter (RFC 6749 §3.3)."""
    if len(value) > _MAX_SCOPE_LENGTH:
        raise InvalidScope("scope parameter is too long")
    tokens = value.split(" ")
    if any(not t for t in tokens):
        raise InvalidScope("scope tokens must be separated by single spaces")
    if len(tokens) > _MAX_SCOPES:
        raise InvalidScope("too many scope tokens")
    return tuple(dict.fromkeys(parse_scope(profile, t) for t in tokens))


def downscope(held: tuple[Scope, ...], requested: tuple[Scope, ...] | None) -> tuple[Scope, ...]:
    """The scopes to grant: all held ones if none requested, else the requested ones if each is covered."""
    if requested is None:
        return held
    for scope in requested:
        if not any(h.covers(scope) for h in held):
            raise InvalidScope(f"scope {_shown(scope.render())} exceeds what the client holds")
    return requested


def render_scopes(scopes: Iterable[Scope]) -> str:
    return " ".join(s.render() for s in scopes)


def _example(profile: ScopeProfile) -> str:
    return "'storage.read:/data'" if profile is ScopeProfile.WLCG else "'read:/data'"


def _shown(text: str) -> str:
    """Echo at most a short prefix of client input in an error description."""
    return repr(text[:64] + ("..." if len(text) > 64 else ""))

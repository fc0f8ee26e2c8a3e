"""Permissions -> OAuth2 scope strings, and the down-scoping check.

A permission is verbs (``read``/``write``) over a path; a path grants itself
and everything below it (the one rule of :mod:`credward.domain.paths`). Two
token profiles render it, both with that prefix meaning:

* WLCG (Common JWT Profiles 1.0): ``storage.read:/a/b`` and ``storage.modify:/a/b``
* SciTokens 2.0: ``read:/a/b`` and ``write:/a/b``

Only normalized paths are rendered: a trailing ``*`` was dropped by
:func:`credward.domain.paths.normalize` (``["*"]`` is ``/``) and no other
``*`` survives it, so a scope never carries a literal ``*``. A path part holds
only ``[A-Za-z0-9._~-]``, so it needs no percent-encoding and can hold no
``/`` or space: each (verb, path) is exactly one scope token, and distinct
grants render distinctly (:func:`parse_scope_param` inverts
:func:`render_scopes`).

A requested scope is granted only if some held scope covers it: the same
action, and the held path a prefix of the requested one, part by part (so
``/store`` covers ``/store/x`` but not ``/storefront``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from credward.domain import paths
from credward.errors import InvalidScope, PathError


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
    """One authorization: an action (profile-specific name) over a normalized path."""

    action: str
    path: paths.Path

    def render(self) -> str:
        return f"{self.action}:{paths.render(self.path)}"

    def covers(self, other: Scope) -> bool:
        """True if this scope authorizes everything ``other`` does (down-scoping check)."""
        return self.action == other.action and paths.covers(self.path, other.path)


def verb_action(profile: ScopeProfile, verb: str) -> str:
    """The profile's action name for a verb; ``grant`` and unknown verbs are refused."""
    try:
        return _ACTIONS[profile][verb]
    except KeyError:
        raise InvalidScope(f"verb {verb!r} cannot be held by a service account") from None


def render_permissions(
    profile: ScopeProfile, permissions: Iterable[tuple[Iterable[str], Iterable[str]]]
) -> tuple[Scope, ...]:
    """Scopes for ``(verbs, path)`` pairs, deduplicated, in first-seen order.

    Paths are normalized here too (a trailing ``*`` dropped), so a caller
    holding raw CRD paths gets the same scopes as one holding
    :class:`credward.api.models.Permission`; a mid-path ``*`` or a bad part
    raises :class:`~credward.errors.PathError` (an ``InvalidSpec``).
    """
    out: dict[Scope, None] = {}
    for verbs, path in permissions:
        parts = paths.normalize(path)
        for verb in verbs:
            out[Scope(verb_action(profile, verb), parts)] = None
    return tuple(out)


def parse_scope(profile: ScopeProfile, text: str) -> Scope:
    """Parse ``action:/path`` of the given profile; raise :class:`InvalidScope` otherwise.

    The path must already be in the form credward renders (absolute, single
    ``/`` between parts, no trailing ``/``, no ``.``/``..``/``*`` parts):
    a request is refused rather than guessed at.
    """
    action, sep, path = text.partition(":")
    if not sep or action not in _ACTIONS[profile].values():
        raise InvalidScope(f"scope {_shown(text)} is not a {profile.value} scope such as {_example(profile)}")
    try:
        return Scope(action, paths.parse(path))
    except PathError:
        raise InvalidScope(
            f"scope {_shown(text)} needs an absolute path such as {_example(profile)}: parts of letters, digits,"
            " '.', '_', '~' or '-' between single '/', without a trailing '/', never '.', '..' or '*'"
        ) from None


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
    """The ``scope`` claim: space-separated tokens; ``""`` for none (the claim is then omitted)."""
    return " ".join(s.render() for s in scopes)


def _example(profile: ScopeProfile) -> str:
    return "'storage.read:/data'" if profile is ScopeProfile.WLCG else "'read:/data'"


def _shown(text: str) -> str:
    """Client input as an RFC 6749 §5.2 ``error_description`` may hold it: printable ASCII but ``"``/``\\``, cut."""
    cut = text[:64]
    safe = "".join(c if " " <= c <= "~" and c not in "\"\\'" else "?" for c in cut)
    return f"'{safe}{'...' if len(text) > 64 else ''}'"

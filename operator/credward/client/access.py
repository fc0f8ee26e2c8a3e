"""A token's ``scope`` claim read as grants, and the one path rule applied to a request.

Both token profiles are understood: WLCG (``storage.read:/p``, ``storage.modify:/p``)
and SciTokens (``read:/p``, ``write:/p``); the action names come from
:func:`credward.domain.scopes.verb_action`, the path rule from
:mod:`credward.domain.paths` (a path grants itself and everything below it).
A scope this module cannot read (another action, no path, a path the rule
refuses such as ``/a/*``) grants nothing: unknown means no.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from credward.api import SERVICE_ACCOUNT_VERBS
from credward.domain import paths
from credward.domain.scopes import ScopeProfile, verb_action

# action name -> verb, per profile
_VERBS: dict[ScopeProfile, dict[str, str]] = {
    profile: {verb_action(profile, verb): verb for verb in SERVICE_ACCOUNT_VERBS} for profile in ScopeProfile
}


@dataclass(frozen=True, slots=True)
class Grant:
    """One readable scope: a verb over a path, with the scope text it came from."""

    verb: str
    path: paths.Path
    scope: str

    def allows(self, verb: str, path: paths.Path) -> bool:
        return self.verb == verb and paths.covers(self.path, path)


def verbs_of(profiles: Iterable[ScopeProfile]) -> dict[str, str]:
    """Action name -> verb for the given profiles."""
    out: dict[str, str] = {}
    for profile in profiles:
        out.update(_VERBS[profile])
    return out


ALL_PROFILES: dict[str, str] = verbs_of(ScopeProfile)


def parse_grants(scope: object, actions: dict[str, str] = ALL_PROFILES) -> tuple[Grant, ...]:
    """The grants of a ``scope`` claim (space-separated, RFC 6749 §3.3); anything unreadable is left out."""
    if not isinstance(scope, str):
        return ()
    grants: list[Grant] = []
    for text in scope.split():
        action, sep, rendered = text.partition(":")
        verb = actions.get(action)
        if verb is None or not sep:
            continue
        try:
            grants.append(Grant(verb, paths.parse(rendered), text))
        except paths.PathError:
            continue
    return tuple(grants)


def check_verb(verb: str) -> str:
    """``read`` or ``write``; anything else is a programming error, not a refusal."""
    if verb not in SERVICE_ACCOUNT_VERBS:
        raise ValueError(f"verb must be one of {', '.join(SERVICE_ACCOUNT_VERBS)}, not {verb!r}")
    return verb


def first_grant(grants: Iterable[Grant], verb: str, path: paths.Path) -> Grant | None:
    """The first grant that allows ``verb`` on ``path``, or None."""
    for grant in grants:
        if grant.allows(verb, path):
            return grant
    return None

"""JWT claim building for the client-credentials grant, with the clock passed in.

Claims follow RFC 9068 / the WLCG and SciTokens profiles so that standard
validators accept the token unmodified: ``iss``, ``sub``, ``aud``, ``iat``,
``nbf``, ``exp``, ``jti``, ``client_id``, ``scope``, ``roles``, ``wlcg.ver``,
``wlcg.groups`` (most specific first, as the account lists them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from credward.domain.scopes import Scope, ScopeProfile, render_scopes
from credward.errors import InvalidClient, InvalidTarget

WLCG_VERSION = "1.0"
SCITOKENS_VERSION = "scitoken:2.0"
# The profiles' "any audience" value, used when neither request nor account names one.
ANY_AUDIENCE = {ScopeProfile.WLCG: "https://wlcg.cern.ch/jwt/v1/any", ScopeProfile.SCITOKENS: "ANY"}


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What to put in one token; ``exp - iat`` is the lifetime actually granted."""

    claims: dict[str, Any]
    expires_in: int
    scope: str


def identity_for(client_id: str, issuer_host: str) -> str:
    """The account's ``sub``: ``<client_id>@clients.<issuer host>`` (as Globus Auth does)."""
    return f"{client_id}@clients.{issuer_host}"


def choose_audience(profile: ScopeProfile, allowed: Sequence[str], requested: Sequence[str]) -> str | list[str]:
    """RFC 8707: each requested audience must be allowed; default to all allowed, or the profile's "any"."""
    if requested:
        for aud in requested:
            if aud not in allowed:
                raise InvalidTarget("the requested audience/resource is not allowed for this client")
        wanted = list(dict.fromkeys(requested))
    elif allowed:
        wanted = list(allowed)
    else:
        return ANY_AUDIENCE[profile]
    return wanted[0] if len(wanted) == 1 else wanted


def token_lifetime(now: int, account_ttl: int, max_ttl: int, account_expires_at: int | None) -> int:
    """Seconds the token lives: the account's TTL, capped by the server and by the account's own expiry."""
    ttl = min(account_ttl, max_ttl)
    if account_expires_at is not None:
        ttl = min(ttl, account_expires_at - now)
    if ttl <= 0:
        raise InvalidClient("client authentication failed")
    return ttl


def build_claims(
    *,
    profile: ScopeProfile,
    issuer: str,
    subject: str,
    client_id: str,
    audience: str | list[str],
    scopes: Sequence[Scope],
    roles: Sequence[str],
    groups: Sequence[str],
    now: int,
    lifetime: int,
    jti: str,
) -> TokenGrant:
    """The claim set of one access token (``now`` in whole seconds since the epoch)."""
    scope = render_scopes(scopes)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
        "roles": list(roles),
        "wlcg.ver": WLCG_VERSION,
        "wlcg.groups": list(groups),
    }
    if profile is ScopeProfile.SCITOKENS:
        claims["ver"] = SCITOKENS_VERSION
    return TokenGrant(claims=claims, expires_in=lifetime, scope=scope)


class ClaimsTemplate:
    """A claim set with its per-token fields left open, serialized once.

    Everything but ``iat``, ``nbf``, ``exp`` and ``jti`` is the same for every
    token a client gets with the same scope and audience, so it is encoded to
    JSON once (with the standard encoder) and each token only splices in three
    integers and a URL-safe id. :meth:`render` yields exactly what
    ``json.dumps(build_claims(...).claims)`` would, up to key order.
    """

    __slots__ = ("_prefix", "_suffix", "response_tail", "scope")

    def __init__(self, grant: TokenGrant) -> None:
        static = {k: v for k, v in grant.claims.items() if k not in ("iat", "nbf", "exp", "jti")}
        body = json.dumps(static, separators=(",", ":"))
        self._prefix = '{"iat":'
        self._suffix = "," + body[1:]
        self.scope = grant.scope
        # the tail of the token response after "expires_in":<n>
        self.response_tail = (',"scope":' + json.dumps(grant.scope) + "}").encode()

    def render(self, now: int, lifetime: int, jti: str) -> bytes:
        """The claims JSON; ``jti`` must be URL-safe (no JSON escaping needed)."""
        return f'{self._prefix}{now},"nbf":{now},"exp":{now + lifetime},"jti":"{jti}"{self._suffix}'.encode()

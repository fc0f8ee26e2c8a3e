"""JWT claim building for the client-credentials grant, with the clock passed in.

Claims follow RFC 9068 and the token profile the service is configured with,
so that the profile's reference validators accept the token unmodified:

* both profiles: ``iss``, ``sub``, ``aud`` (always present: both profiles
  require it, with their own "any audience" value when the account names
  none), ``iat``, ``nbf``, ``exp``, ``jti``, ``client_id``, ``roles``,
  ``wlcg.groups`` (most specific first, as the account lists them), and
  ``scope`` when the account holds any permission;
* WLCG Common JWT Profiles: ``wlcg.ver`` ``"1.0"`` (the profile keeps "1.0"
  for tokens of its later minor versions);
* SciTokens claims and scopes language 2.0: ``ver`` ``"scitoken:2.0"``.

Each profile's token carries only its own version claim: a token claims one
profile, whose scope names it uses.

An account without permissions gets no ``scope`` member at all (in the token
and in the token response): an empty string is not a scope (RFC 6749 §3.3
needs at least one token) and oauthlib reads it as ``['']``. WLCG makes
``scope`` optional. SciTokens 2.0 calls it REQUIRED: the ``scitokens``
package refuses such a token and scitokens-cpp accepts it for no path, both
right for an account that may do nothing there; its ``roles`` still serve
resource servers that authorize by role (``credward.client``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from credward.domain.scopes import Scope, ScopeProfile, render_scopes
from credward.errors import InvalidClient, InvalidTarget

WLCG_VERSION = "1.0"
CLOCK_SKEW_ALLOWANCE = 60
"""Seconds by which ``iat`` and ``nbf`` precede the signing instant.

The reference validators check both claims with no leeway by default:
PyJWT (under the ``scitokens`` package) refuses ``iat``/``nbf`` later than its
clock, the SciTokens Enforcer wants them strictly earlier, and scitokens-cpp
refuses a future ``iat``. A fresh token with ``iat == nbf == now`` therefore
fails wherever the validator's clock is a second behind the issuer's. A token
cannot be presented before it exists, so an earlier start grants no use it
could not have anyway; it only makes the token look a minute older, which
makes age limits stricter, never looser. A minute covers a node whose NTP
has not settled yet (a clock further off breaks more than tokens) and keeps
``exp - iat`` (``lifetime + 60``) well inside the profiles' lifetime
guidance. ``exp`` is still ``now + lifetime``: the token lives as long as
``expires_in`` says.
"""
SCITOKENS_VERSION = "scitoken:2.0"
# The profiles' "any audience" value, used when neither request nor account names one.
ANY_AUDIENCE = {ScopeProfile.WLCG: "https://wlcg.cern.ch/jwt/v1/any", ScopeProfile.SCITOKENS: "ANY"}


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What to put in one token; ``expires_in`` (``exp - now``) is the lifetime actually granted.

    ``scope`` is the rendered scope, ``""`` when the token carries none (and then has no ``scope`` claim).
    """

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
    start = now - CLOCK_SKEW_ALLOWANCE
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": start,
        "nbf": start,
        "exp": now + lifetime,
        "jti": jti,
        "client_id": client_id,
    }
    if scope:
        claims["scope"] = scope
    claims["roles"] = list(roles)
    claims["wlcg.groups"] = list(groups)
    if profile is ScopeProfile.SCITOKENS:
        claims["ver"] = SCITOKENS_VERSION
    else:
        claims["wlcg.ver"] = WLCG_VERSION
    return TokenGrant(claims=claims, expires_in=lifetime, scope=scope)


class ClaimsTemplate:
    """A claim set with its per-token fields left open, serialized once.

    Everything but ``iat``, ``nbf``, ``exp`` and ``jti`` is the same for every
    token a client gets with the same scope and audience, so it is encoded to
    JSON once (with the standard encoder) and each token only splices in three
    integers (``iat`` and ``nbf`` are the same one) and a URL-safe id.
    :meth:`render` yields exactly what ``json.dumps(build_claims(...).claims)``
    would, up to key order. ``response_tail`` ends the token response: with
    ``"scope"`` when there is one, without the member when there is none.
    """

    __slots__ = ("_prefix", "_suffix", "response_tail", "scope")

    def __init__(self, grant: TokenGrant) -> None:
        static = {k: v for k, v in grant.claims.items() if k not in ("iat", "nbf", "exp", "jti")}
        body = json.dumps(static, separators=(",", ":"))
        self._prefix = '{"iat":'
        self._suffix = "," + body[1:]
        self.scope = grant.scope
        # the tail of the token response after "expires_in":<n>
        self.response_tail = ((',"scope":' + json.dumps(grant.scope) if grant.scope else "") + "}").encode()

    def render(self, now: int, lifetime: int, jti: str) -> bytes:
        """The claims JSON; ``jti`` must be URL-safe (no JSON escaping needed)."""
        start = now - CLOCK_SKEW_ALLOWANCE
        return f'{self._prefix}{start},"nbf":{start},"exp":{now + lifetime},"jti":"{jti}"{self._suffix}'.encode()

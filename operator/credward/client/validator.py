"""Token verification for resource servers: keys from the issuer, checks by PyJWT, answers by check name.

::

    validator = TokenValidator("https://credward-security.credward.svc:9000", audience="https://storage.example")
    token = validator.verify(bearer_token(request.headers.get("Authorization")))  # InvalidToken(check=...) -> 401
    token.require("read", "/store/artifacts/build-7")                           # InsufficientScope -> 403

What happens on :meth:`TokenValidator.verify`:

1. The verified-token cache: a token seen before and not yet past ``exp`` (plus
   leeway) costs one dictionary lookup.
2. The key: the header's ``kid`` in the cached JWKS (fetched through discovery).
   An unknown ``kid`` refreshes the JWKS, at most once per
   ``jwks_min_refresh_interval`` (a stream of forged ``kid``\\ s cannot turn the
   validator into a load generator against the issuer); keys older than
   ``jwks_max_age`` are refreshed too, so a withdrawn key stops verifying.
3. PyJWT's ``jwt.decode``: the signature with the key's own algorithm (never
   the header's choice, RFC 8725 §3.1), ``iss``, ``aud``, ``exp``, ``nbf``,
   ``iat`` with ``leeway``, and the required claims.
4. The revocation feed, if followed (:meth:`TokenValidator.follow_revocations`).
   A validator that has lost the feed for longer than ``loss_grace`` says so
   (a warning, :attr:`TokenValidator.revocation_feed`) and, by default, refuses
   every token with :class:`IssuerUnavailable` (fail closed: it can no longer
   tell a revoked account's live token from a good one) until the feed is back.

Each refusal is an :class:`InvalidToken` whose ``check`` names the check.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self

import httpx
import jwt
from jwt.types import Options

from credward.client import access
from credward.client.cache import VerifiedCache
from credward.client.discovery import Metadata, json_object, metadata_request, parse_metadata, transport_error
from credward.client.errors import Check, InsufficientScope, InvalidToken, IssuerUnavailable
from credward.client.revocations import RevocationList, feed_request, parse_feed
from credward.domain import paths
from credward.domain.claims import ANY_AUDIENCE
from credward.domain.scopes import ScopeProfile

log = logging.getLogger("credward.client")

ASYMMETRIC_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "sub")
DEFAULT_LEEWAY = 30.0
_MAX_HEADERS = 64  # distinct token headers remembered (one per signing key, in practice)
_MAX_AUTHORITIES = 4096  # distinct (scope, roles) pairs remembered


@dataclass(frozen=True, slots=True, eq=False)
class AccessToken:
    """A verified token: its claims (read-only) and what it grants, parsed once."""

    claims: Mapping[str, Any]
    grants: tuple[access.Grant, ...]
    roles: frozenset[str]

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def client_id(self) -> str | None:
        value = self.claims.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])

    @property
    def scope(self) -> str:
        value = self.claims.get("scope")
        return value if isinstance(value, str) else ""

    def allows(self, verb: str, path: str | Sequence[str]) -> bool:
        try:
            return self.require(verb, path) is not None
        except InsufficientScope:
            return False

    def require(self, verb: str, path: str | Sequence[str]) -> access.Grant:
        """The grant that allows ``verb`` on ``path`` (``/a/b`` or parts), or :class:`InsufficientScope`.

        A scope's path grants itself and everything below it, in both profiles
        (:mod:`credward.domain.paths`). A path that breaks the path rule is refused.
        """
        access.check_verb(verb)
        try:
            wanted = paths.parse(path) if isinstance(path, str) else tuple(paths.check_part(p) for p in path)
        except paths.PathError as exc:
            raise InsufficientScope(Check.SCOPE, f"{verb} on an invalid path: {exc}") from None
        grant = access.first_grant(self.grants, verb, wanted)
        if grant is None:
            held = self.scope or "no scopes"
            raise InsufficientScope(
                Check.SCOPE, f"{self.subject} may not {verb} {paths.render(wanted)} (the token grants: {held})"
            )
        return grant

    def require_role(self, *roles: str) -> str:
        """One of ``roles`` that the token's ``roles`` claim carries, or :class:`InsufficientScope`."""
        for role in roles:
            if role in self.roles:
                return role
        held = ", ".join(sorted(self.roles)) or "none"
        raise InsufficientScope(Check.ROLE, f"{self.subject} has none of the roles {', '.join(roles)} (it has: {held})")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), or :class:`InvalidToken`."""
    if not authorization:
        raise InvalidToken(Check.FORMAT, "no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise InvalidToken(Check.FORMAT, "the Authorization header is not 'Bearer <token>'")
    return token


@dataclass(frozen=True, slots=True)
class KeySet:
    """Published verification keys: kid -> (algorithm, key object), and when they were fetched."""

    keys: Mapping[str, tuple[str, Any]]
    fetched_at: float

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], algorithms: Sequence[str], fetched_at: float) -> KeySet:
        """The usable signing keys of a JWKS document; keys PyJWT cannot load or of other algorithms are left out."""
        keys: dict[str, tuple[str, Any]] = {}
        raw = jwks.get("keys")
        for jwk in raw if isinstance(raw, list) else ():
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                loaded = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue
            if loaded.algorithm_name in algorithms:
                keys[str(jwk.get("kid", ""))] = (loaded.algorithm_name, loaded.key)
        return cls(MappingProxyType(keys), fetched_at)


def _decode_error(exc: jwt.PyJWTError) -> InvalidToken:
    """PyJWT's exception as the check that failed."""
    match exc:
        case jwt.ExpiredSignatureError():
            return InvalidToken(Check.EXPIRED, "the token has expired")
        case jwt.ImmatureSignatureError():
            check = Check.ISSUED_AT if "(iat)" in str(exc) else Check.NOT_YET_VALID
            return InvalidToken(check, f"the token is not valid yet ({check.value} is in the future)")
        case jwt.InvalidIssuedAtError():
            return InvalidToken(Check.ISSUED_AT, "iat is not a number")
        case jwt.InvalidAudienceError():
            return InvalidToken(Check.AUDIENCE, "the token is not meant for this audience")
        case jwt.InvalidIssuerError():
            return InvalidToken(Check.ISSUER, "the token is from another issuer")
        case jwt.MissingRequiredClaimError():
            return InvalidToken(Check.REQUIRED_CLAIM, f"the token has no {exc.claim!r} claim")
        case jwt.InvalidSignatureError():
            return InvalidToken(Check.SIGNATURE, "the signature does not verify")
        case jwt.InvalidAlgorithmError():
            return InvalidToken(Check.ALGORITHM, "the algorithm is not allowed")
        case _:
            return InvalidToken(Check.FORMAT, f"the token cannot be decoded: {exc}")


DEFAULT_FEED_LOSS_GRACE = 30.0


@dataclass(frozen=True, slots=True)
class FeedState:
    """The revocation feed as the validator sees it.

    ``lost_since``: when it stopped answering (the validator's clock), None while it is current.
    ``blind``: lost for longer than the grace, so revocations since then are unknown; ``refusing``: and so
    every token is refused.
    """

    following: bool
    lost_since: float | None
    blind: bool
    refusing: bool


class TokenValidator:
    """Verifies credward (or any RFC 9068-style) JWT access tokens of one issuer; see the module docstring.

    ``audience`` is required and keyword-only: pass the audience (or audiences)
    this resource server answers to; ``None`` switches the ``aud`` check off and
    must be said out loud. ``accept_any_audience`` also takes the profiles'
    "any" audience (``https://wlcg.cern.ch/jwt/v1/any``, ``ANY``).
    ``jwks`` gives the keys directly (no discovery, never refreshed).
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str | Sequence[str] | None,
        accept_any_audience: bool = False,
        base_url: str | None = None,
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        profiles: Sequence[ScopeProfile] = tuple(ScopeProfile),
        algorithms: Sequence[str] = ASYMMETRIC_ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        jwks_min_refresh_interval: float = 30.0,
        jwks_max_age: float = 300.0,
        cache_size: int = 10_000,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if any(a.startswith("HS") or a == "none" for a in algorithms):
            raise ValueError("only asymmetric algorithms verify tokens of an issuer")
        self.issuer = issuer
        if audience is None:
            self._audience: list[str] | None = None
        else:
            self._audience = [audience] if isinstance(audience, str) else list(audience)
            if accept_any_audience:
                self._audience += list(ANY_AUDIENCE.values())
        self._base_url = base_url or issuer
        self._jwks_uri = jwks_uri
        self._feed_uri: str | None = None
        self._actions = access.verbs_of(profiles)
        self._algorithms = tuple(algorithms)
        self._leeway = leeway
        self._min_refresh = jwks_min_refresh_interval
        self._max_age = jwks_max_age
        self._timeout = timeout
        self._verify_tls = verify
        self._http = http_client
        self._owns_http = http_client is None
        self._clock = clock
        self._static = jwks is not None
        self._keys: KeySet | None = KeySet.from_jwks(jwks, self._algorithms, clock()) if jwks is not None else None
        self._last_refresh_attempt = float("-inf")
        self._jwks_fetches = 0
        self._refresh_lock = threading.Lock()
        self._loop_locks_guard = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._headers: dict[str, tuple[str | None, str]] = {}
        self._authorities: dict[tuple[str, tuple[str, ...]], tuple[tuple[access.Grant, ...], frozenset[str]]] = {}
        self._cache: VerifiedCache[AccessToken] = VerifiedCache(cache_size, clock)
        self._jwt = jwt.PyJWT()
        self._options: Options = {"require": list(REQUIRED_CLAIMS), "verify_aud": audience is not None}
        self._revoked = RevocationList()
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()
        # While following the feed: since when it has not answered (None: it is current), and what then.
        self._feed_lost_since: float | None = None
        self._feed_loss_grace = DEFAULT_FEED_LOSS_GRACE
        self._feed_refuses_on_loss = True

    # -- verification ---------------------------------------------------------------------------------

    def verify(self, token: str) -> AccessToken:
        """The verified token, or :class:`InvalidToken` naming the failed check (may fetch keys, blocking)."""
        self._feed_guard()
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        kid, alg = self._header(token)
        if self._wants_refresh(kid):
            self._refresh_sync(kid)
        return self._check(token, kid, alg)

    async def averify(self, token: str) -> AccessToken:
        """:meth:`verify` for asyncio: a key refresh does not block the loop (the signature check does, briefly)."""
        self._feed_guard()
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        kid, alg = self._header(token)
        if self._wants_refresh(kid):
            await self._refresh_async(kid)
        return self._check(token, kid, alg)

    def authorize(self, token: str, verb: str, path: str | Sequence[str]) -> AccessToken:
        """Verify, then :meth:`AccessToken.require` ``verb`` on ``path``."""
        verified = self.verify(token)
        verified.require(verb, path)
        return verified

    def _header(self, token: str) -> tuple[str | None, str]:
        segment = token.partition(".")[0]
        known = self._headers.get(segment)
        if known is not None:
            return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(Check.FORMAT, f"the token cannot be decoded: {exc}") from None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise InvalidToken(Check.FORMAT, "the token header has no usable alg/kid")
        if alg not in self._algorithms:
            raise InvalidToken(Check.ALGORITHM, f"algorithm {alg[:16]!r} is not allowed")
        if len(self._headers) >= _MAX_HEADERS:
            self._headers.clear()
        self._headers[segment] = (kid, alg)
        return kid, alg

    def _lookup(self, keys: KeySet, kid: str | None) -> tuple[str, Any] | None:
        if kid is None:  # RFC 7515 makes kid optional: fine while the issuer publishes one key
            return next(iter(keys.keys.values())) if len(keys.keys) == 1 else None
        return keys.keys.get(kid)

    def _check(self, token: str, kid: str | None, alg: str) -> AccessToken:
        keys = self._keys
        if keys is None:
            raise IssuerUnavailable(f"no keys of {self.issuer} yet (the JWKS could not be fetched)")
        entry = self._lookup(keys, kid)
        if entry is None:
            age = self._clock() - keys.fetched_at
            shown = repr(kid[:64]) if kid is not None else "(none)"
            raise InvalidToken(Check.KEY, f"no published key has id {shown} (keys fetched {age:.0f}s ago)")
        key_alg, key = entry
        if alg != key_alg:
            raise InvalidToken(Check.ALGORITHM, f"the token says {alg}, its key is {key_alg}")
        try:
            claims = self._jwt.decode(
                token,
                key,
                algorithms=[key_alg],
                audience=self._audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise _decode_error(exc) from None
        revoked = self._revoked
        if revoked and revoked.is_revoked(claims):
            raise InvalidToken(Check.REVOKED, "the token or its account has been revoked")
        grants, roles = self._authority(claims.get("scope"), claims.get("roles"))
        verified = AccessToken(MappingProxyType(claims), grants, roles)
        exp = claims["exp"]
        if isinstance(exp, int | float):
            # Cached until the moment the exp check would refuse it; a revocation seen meanwhile keeps it out.
            self._cache.put(token, verified, exp + self._leeway, admit=lambda: not revoked.is_revoked(claims))
        return verified

    def _authority(self, scope: object, roles: object) -> tuple[tuple[access.Grant, ...], frozenset[str]]:
        """Grants and roles, parsed once per distinct (scope, roles): the tokens of one account all share them."""
        role_names = tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
        key = (scope if isinstance(scope, str) else "", role_names)
        known = self._authorities.get(key)
        if known is None:
            if len(self._authorities) >= _MAX_AUTHORITIES:
                self._authorities.clear()
            known = self._authorities[key] = (access.parse_grants(key[0], self._actions), frozenset(role_names))
        return known

    # -- keys -----------------------------------------------------------------------------------------

    @property
    def jwks_fetches(self) -> int:
        """How many times the JWKS has been fetched (for metrics and tests)."""
        return self._jwks_fetches

    def _may_fetch(self) -> bool:
        return self._clock() - self._last_refresh_attempt >= self._min_refresh

    def _wants_refresh(self, kid: str | None) -> bool:
        """No keys yet, an unknown kid, or keys past their age (the rate limit is applied under the lock)."""
        if self._static:
            return False
        keys = self._keys
        if keys is None or self._lookup(keys, kid) is None:
            return True  # callers wait for a refresh under way, or make one if the rate limit allows
        return self._clock() - keys.fetched_at >= self._max_age and self._may_fetch()  # stale: refresh, never wait

    def refresh_keys(self) -> None:
        """Fetch the JWKS now (no rate limit): e.g. at startup, to fail fast if the issuer is unreachable."""
        if self._static:
            return
        with self._refresh_lock:
            self._last_refresh_attempt = self._clock()
            self._fetch_keys_sync()

    def _refresh_sync(self, kid: str | None) -> None:
        # Callers that find a refresh under way wait for it, then see its keys.
        with self._refresh_lock:
            if not self._wants_refresh(kid) or not self._may_fetch():
                return
            self._last_refresh_attempt = self._clock()
            try:
                self._fetch_keys_sync()
            except IssuerUnavailable as exc:
                self._refresh_failed(exc)

    async def _refresh_async(self, kid: str | None) -> None:
        async with self._async_lock():
            if not self._wants_refresh(kid) or not self._may_fetch():
                return
            self._last_refresh_attempt = self._clock()
            try:
                await self._fetch_keys_async()
            except IssuerUnavailable as exc:
                self._refresh_failed(exc)

    def _refresh_failed(self, exc: IssuerUnavailable) -> None:
        if self._keys is None:
            raise exc
        log.warning("keeping the JWKS of %s fetched earlier: %s", self.issuer, exc)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._loop_locks_guard:  # never the fetch lock: a sync fetch in another thread must not block the loop
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout, verify=self._verify_tls)
        return self._http

    def _fetch_keys_sync(self) -> None:
        http = self._client()
        if self._jwks_uri is None:
            self._remember(parse_metadata(self._send_sync(http, metadata_request(self._base_url)), self.issuer))
        assert self._jwks_uri is not None
        self._install(self._send_sync(http, httpx.Request("GET", self._jwks_uri)))

    async def _fetch_keys_async(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout, verify=self._verify_tls) as http:
            if self._jwks_uri is None:
                metadata = await self._send_async(http, metadata_request(self._base_url))
                self._remember(parse_metadata(metadata, self.issuer))
            assert self._jwks_uri is not None
            self._install(await self._send_async(http, httpx.Request("GET", self._jwks_uri)))

    @staticmethod
    def _send_sync(http: httpx.Client, request: httpx.Request) -> httpx.Response:
        try:
            return http.send(request)
        except httpx.HTTPError as exc:
            raise transport_error("issuer", str(request.url), exc) from None

    @staticmethod
    async def _send_async(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        try:
            return await http.send(request)
        except httpx.HTTPError as exc:
            raise transport_error("issuer", str(request.url), exc) from None

    def _remember(self, metadata: Metadata) -> None:
        if metadata.jwks_uri is None:
            raise IssuerUnavailable(f"the discovery document of {self.issuer} names no jwks_uri")
        self._jwks_uri = metadata.jwks_uri
        self._feed_uri = metadata.revocation_feed_endpoint

    def _install(self, response: httpx.Response) -> None:
        keys = KeySet.from_jwks(json_object(response, "JWKS"), self._algorithms, self._clock())
        if not keys.keys:
            raise IssuerUnavailable(f"the JWKS of {self.issuer} has no usable key")
        self._keys = keys
        self._jwks_fetches += 1
        log.info("JWKS of %s fetched: %s", self.issuer, ", ".join(sorted(keys.keys)))

    # -- revocation feed ------------------------------------------------------------------------------

    def follow_revocations(
        self,
        wait: float = 25.0,
        max_token_lifetime: float = 86400.0,
        *,
        loss_grace: float = DEFAULT_FEED_LOSS_GRACE,
        on_loss: Literal["refuse", "accept"] = "refuse",
    ) -> None:
        """Start a daemon thread that long-polls the issuer's revocation feed; :meth:`close` stops it.

        Revoked tokens (and every token of a revoked account issued up to its
        revocation) are refused with ``check == "revoked"`` from the moment the
        feed names them, cached or not.

        When the feed has not answered for ``loss_grace`` seconds (a failed poll starts the count; so does
        the start, until the first answer), the validator cannot know what was revoked meanwhile. It logs
        a warning, :attr:`revocation_feed` reports it, and with ``on_loss="refuse"`` (the default) every
        ``verify`` raises :class:`IssuerUnavailable` (a 503, not a 401: the token may be fine) until the
        feed answers again; ``on_loss="accept"`` keeps honouring tokens until their ``exp``, as a
        validator without the feed does.
        """
        if self._follower is not None:
            return
        self._feed_loss_grace = loss_grace
        self._feed_refuses_on_loss = on_loss == "refuse"
        self._feed_lost_since = self._clock()  # not current until the first answer
        if self._feed_uri is None and self._jwks_uri is None and not self._static:
            self.refresh_keys()  # discovery names the feed
        url = self._feed_uri or self._base_url.rstrip("/") + "/v1/revocations"
        self._stop.clear()
        thread = threading.Thread(
            target=self._follow, args=(url, wait, max_token_lifetime), name="credward-revocations", daemon=True
        )
        self._follower = thread
        thread.start()

    def poll_revocations(self, wait: float = 0.0, url: str | None = None, http: httpx.Client | None = None) -> int:
        """One poll of the feed (for callers that run their own loop); returns how many events arrived."""
        feed_url = url or self._feed_uri or self._base_url.rstrip("/") + "/v1/revocations"
        client = http or self._client()
        events, cursor = parse_feed(self._send_sync(client, feed_request(feed_url, self._revoked.cursor, wait)))
        if events:
            self._revoked.apply(events, cursor)
            dropped = self._cache.discard_if(self._revoked_token)
            log.info("revocation feed: %d event(s), %d cached token(s) dropped", len(events), dropped)
        else:
            self._revoked.apply([], cursor)
        return len(events)

    def _revoked_token(self, token: AccessToken) -> bool:
        return self._revoked.is_revoked(token.claims)

    def _follow(self, url: str, wait: float, max_token_lifetime: float) -> None:
        backoff = 1.0
        with httpx.Client(timeout=wait + self._timeout, verify=self._verify_tls) as http:
            while not self._stop.is_set():
                try:
                    self.poll_revocations(wait, url, http)
                    self._revoked.forget_expired(self._clock(), max_token_lifetime)
                    backoff = 1.0
                    self._feed_answered()
                except IssuerUnavailable as exc:
                    if self._stop.is_set():
                        return  # closed while a poll was in flight: nothing is lost, nothing to tell
                    self._feed_failed(exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)

    def _feed_answered(self) -> None:
        lost = self._feed_lost_since
        self._feed_lost_since = None
        if lost is not None and self._clock() - lost >= self._feed_loss_grace:
            log.warning(
                "revocation feed of %s is back after %.0fs; tokens are accepted again",
                self.issuer,
                self._clock() - lost,
            )

    def _feed_failed(self, exc: IssuerUnavailable, backoff: float) -> None:
        if self._feed_lost_since is None:
            self._feed_lost_since = self._clock()
            then = "refusing every token" if self._feed_refuses_on_loss else "accepting tokens until their exp"
            log.warning(
                "revocation feed lost: %s; retrying in %.0fs, %s if it is not back within %.0fs",
                exc,
                backoff,
                then,
                self._feed_loss_grace,
            )
        else:
            log.info("revocation feed: %s (retrying in %.0fs)", exc, backoff)

    @property
    def revocation_feed(self) -> FeedState:
        """Whether revocations are current; for a readiness probe or a metric."""
        lost = self._feed_lost_since if self._follower is not None else None
        blind = lost is not None and self._clock() - lost >= self._feed_loss_grace
        return FeedState(self._follower is not None, lost, blind, blind and self._feed_refuses_on_loss)

    def _feed_guard(self) -> None:
        lost = self._feed_lost_since
        if lost is None or not self._feed_refuses_on_loss:
            return
        since = self._clock() - lost
        if since >= self._feed_loss_grace:
            raise IssuerUnavailable(
                f"the revocation feed of {self.issuer} has not answered for {since:.0f}s: "
                "refusing tokens until it does (follow_revocations(on_loss='refuse'))"
            )

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Stop following the feed and close the HTTP client this validator made."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=1.0)
            self._follower = None
        self._feed_lost_since = None
        if self._http is not None and self._owns_http:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

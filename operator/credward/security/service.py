"""The OAuth2 side of the service: token issuance, introspection and revocation, as domain calls.

Header values and a body reader in, domain values out; every refusal is one of credward's
:class:`~credward.errors.AuthError` s, which :mod:`credward.security.edge` turns into the RFC 6749 §5.2
answer. Nothing here knows HTTP status codes.

With ``client_secret_basic`` the client is authenticated from its ``Authorization`` header *before*
the body is read: a wrong secret costs no body read (and, on servers that send ``100 Continue`` on the
first read, no ``100 Continue``).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import jwt

from credward.domain.claims import ClaimsTemplate, build_claims, choose_audience, token_lifetime
from credward.domain.oauth import (
    AuthMethod,
    ClientCredentials,
    TokenForm,
    choose_credentials,
    parse_basic,
    parse_form,
    parse_token_form,
    single,
)
from credward.domain.scopes import ScopeProfile, downscope, parse_scope_param
from credward.domain.secrets import SECRET_PREFIX, hash_secret
from credward.domain.throttle import FailureThrottle
from credward.errors import AuthError, InvalidClient, InvalidRequest, ServiceError, Throttled, UnauthorizedClient
from credward.security import audit
from credward.security.accounts import MISS, AccountCache, ClientEntry
from credward.security.feed import RevocationFeed
from credward.security.keys import KeyRing
from credward.security.metrics import Metrics
from credward.security.settings import Settings
from credward.security.store.base import Store
from credward.security.usage import UsageTracker

log = logging.getLogger(__name__)

_MAX_TEMPLATES = 64
_MAX_PARSED = 10_000


class TokenIds:
    """Random 128-bit ``jti`` values from OS randomness read in 4 KiB blocks.

    One ``getrandom`` call per token measured at ~25 us in a VM; reading a
    block at a time keeps the values the same kind (CSPRNG bytes, never reused).
    """

    _BLOCK = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0

    def next(self) -> str:
        if self._pos + 16 > len(self._buffer):
            self._buffer, self._pos = os.urandom(self._BLOCK), 0
        raw = self._buffer[self._pos : self._pos + 16]
        self._pos += 16
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


BodyReader = Callable[[], Awaitable[bytes]]
INACTIVE: dict[str, Any] = {"active": False}
_INTROSPECTED = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "roles", "wlcg.groups")


def memo_key(key: bytes, *parts: bytes | None) -> bytes:
    """An HMAC of ``parts``, each length-prefixed (``None`` as ``-``), so two different requests never share a key.

    (Joining the parts with a separator would not do: a missing header and one whose value reads
    ``None`` would meet.) The HMAC keeps the secrets a request carries out of the memo's keys.
    """
    encoded = b"".join(b"-" if part is None else b"%d:%b" % (len(part), part) for part in parts)
    return hmac.digest(key, encoded, "sha256")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A granted token (RFC 6749 §5.1), pre-encoded: ``response_tail`` is the response JSON after ``expires_in``."""

    access_token: bytes
    expires_in: int
    response_tail: bytes


class OAuthService:
    """Token issuance, introspection and revocation, sharing one client authentication path."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keyring: KeyRing,
        accounts: AccountCache,
        feed: RevocationFeed,
        metrics: Metrics,
        hash_key: bytes,
        clock: Callable[[], float] = time.time,
        usage: UsageTracker | None = None,
    ) -> None:
        self.settings = settings
        self.usage = usage if usage is not None else UsageTracker(store, metrics)
        self.store = store
        self.keyring = keyring
        self.accounts = accounts
        self.feed = feed
        self.metrics = metrics
        self._hash_key = hash_key
        self._clock = clock
        self._profile: ScopeProfile = settings.scope_profile
        self._introspectors = frozenset(settings.introspect_allow)
        self.client_throttle = FailureThrottle(settings.throttle_client_failures, settings.throttle_window)
        self.ip_throttle = FailureThrottle(settings.throttle_ip_failures, settings.throttle_window)
        self.audit = audit.AuditLog()
        self._jti = TokenIds()
        # Clients repeat the very same request for every token. Its parse is kept under an HMAC of its exact
        # bytes (see memo_key), with the secret's keyed hash but never the secret: the Authorization header ->
        # (client id, secret hash), and the body (with the Basic client id) -> the parsed form. Only parts of
        # requests that got a token are kept, and the secret hash is checked against the account's live
        # hashes every time.
        self._basic: dict[bytes, tuple[str, str]] = {}
        self._forms: dict[bytes, tuple[TokenForm, str | None]] = {}

    # -- client authentication -------------------------------------------------------------

    def _check_throttle(self, ip: str, now: float) -> None:
        retry = self.ip_throttle.retry_after(ip, now)
        if retry is not None:
            raise Throttled("too many failed authentication attempts; retry later", retry)

    async def _entry(self, client_id: str, now: float) -> ClientEntry | None:
        """The client's cached view, from the store only on a cache miss."""
        if client_id.startswith(SECRET_PREFIX):  # fields swapped: never looked up, so it reaches no store or log
            return None
        found = self.accounts.peek(client_id, now)
        return await self.accounts.get(client_id) if found is MISS else found

    def _verify(self, entry: ClientEntry | None, client_id: str, presented: str, ip: str, now: float) -> ClientEntry:
        """Verify the secret; failures count per client id and per address.

        A client id is public (it is in every token), so a locked-out client id
        still accepts its correct secret: otherwise anyone could lock a workload
        out by sending wrong secrets in its name. Past the limit, failures get
        429 instead of 401. The per-address lock (checked before any parsing)
        is absolute and is what sheds an attacker's load.
        """
        secret_id = entry.matching_secret(presented, now) if entry is not None else None
        if entry is None or secret_id is None or not entry.usable(now):
            locked = self.client_throttle.retry_after(client_id, now)
            self.client_throttle.record_failure(client_id, now)
            self.ip_throttle.record_failure(ip, now)
            if locked is not None:
                raise Throttled("too many failed authentication attempts for this client; retry later", locked)
            raise InvalidClient("client authentication failed")
        self.usage.record(client_id, secret_id, ip, now)
        return entry

    def _parse_basic(self, authorization: bytes, ip: str, now: float) -> tuple[str, str, bytes | None]:
        """``(client id, secret hash, memo key to remember it under or None if it came from the memo)``."""
        key = memo_key(self._hash_key, b"basic", authorization)
        remembered = self._basic.get(key)
        if remembered is not None:
            return remembered[0], remembered[1], None
        try:
            creds = parse_basic(authorization.decode("latin-1"))
        except InvalidClient:  # malformed Basic credentials count as a failed attempt
            self.ip_throttle.record_failure(ip, now)
            raise
        return creds.client_id, hash_secret(self._hash_key, creds.client_secret), key

    async def _caller(
        self, content_type: bytes | None, authorization: bytes | None, ip: str, read_body: BodyReader
    ) -> tuple[ClientEntry, dict[str, list[str]]]:
        """Authenticate the calling client (RFC 7662 §2.1, RFC 7009 §2.1), the header first; and its form."""
        now = self._clock()
        self._check_throttle(ip, now)
        basic = caller = None
        if authorization:
            try:
                basic = parse_basic(authorization.decode("latin-1"))
            except InvalidClient:
                self.ip_throttle.record_failure(ip, now)
                raise
            presented = hash_secret(self._hash_key, basic.client_secret)
            caller = self._verify(await self._entry(basic.client_id, now), basic.client_id, presented, ip, now)
        form = parse_form(await read_body(), _text(content_type))
        creds = choose_credentials(single(form, "client_id"), single(form, "client_secret"), basic)
        if caller is None:
            presented = hash_secret(self._hash_key, creds.client_secret)
            caller = self._verify(await self._entry(creds.client_id, now), creds.client_id, presented, ip, now)
        return caller, form

    # -- token endpoint ----------------------------------------------------------------------

    def _template(self, entry: ClientEntry, form: TokenForm, method: AuthMethod) -> tuple[ClaimsTemplate, str]:
        """Down-scope and pick the audience once per (client, scope, audience); the result is cached on the entry.

        Returns the claims template and the static tail of the audit line.
        """
        key = (form.scope, form.audiences, method.value)
        cached = entry.templates.get(key)
        if cached is not None:
            return cached
        requested = parse_scope_param(self._profile, form.scope) if form.scope is not None else None
        scopes = downscope(entry.held_scopes, requested)
        account = entry.account
        audience = choose_audience(self._profile, account.audiences, form.audiences)
        grant = build_claims(
            profile=self._profile,
            issuer=self.settings.issuer,
            subject=account.identity,
            client_id=account.client_id,
            audience=audience,
            scopes=scopes,
            roles=entry.roles,
            groups=account.groups,
            now=0,
            lifetime=1,
            jti="",
        )
        if len(entry.templates) >= _MAX_TEMPLATES:
            entry.templates.clear()
        audit_tail = self.audit.issued_static(account.client_id, grant.scope, audience, method.value)
        entry.templates[key] = result = (ClaimsTemplate(grant), audit_tail)
        return result

    async def token(
        self, content_type: bytes | None, authorization: bytes | None, ip: str, read_body: BodyReader
    ) -> IssuedToken:
        """RFC 6749 §4.4: a token for an authenticated client, or the :class:`AuthError` that refuses it.

        With client_secret_basic the secret is checked before ``read_body`` is called. The store is
        awaited only when the client's account is not cached.
        """
        started = time.perf_counter()
        now = self._clock()
        client_id: str | None = None
        entry: ClientEntry | None = None
        try:
            self._check_throttle(ip, now)
            basic_id: str | None = None
            if authorization:
                basic_id, presented, basic_key = self._parse_basic(authorization, ip, now)
                client_id = basic_id
                entry = self._verify(await self._entry(basic_id, now), basic_id, presented, ip, now)
                if basic_key is not None:
                    self._remember(self._basic, basic_key, (basic_id, presented))
            body = await read_body()
            form_key = memo_key(
                self._hash_key, b"form", None if basic_id is None else basic_id.encode(), content_type, body
            )
            remembered = self._forms.get(form_key)
            if remembered is None:
                parsed = parse_token_form(body, _text(content_type))
                # The header's secret was checked already; only the body's rules are left (RFC 6749 §2.3).
                basic = None if basic_id is None else ClientCredentials(basic_id, "-", AuthMethod.BASIC)
                creds = choose_credentials(parsed.client_id, parsed.client_secret, basic)
                post_hash = None if basic is not None else hash_secret(self._hash_key, creds.client_secret)
                form = replace(parsed, client_secret=None)  # the secret itself is never kept
            else:
                form, post_hash = remembered
            if entry is None:  # client_secret_post
                assert form.client_id is not None
                assert post_hash is not None
                client_id = form.client_id
                entry = self._verify(await self._entry(client_id, now), client_id, post_hash, ip, now)
            method = AuthMethod.BASIC if basic_id is not None else AuthMethod.POST
            template, audit_tail = self._template(entry, form, method)
            whole_now = int(now)
            expires = int(entry.expires_at) if entry.expires_at is not None else None
            lifetime = token_lifetime(whole_now, entry.account.token_ttl_seconds, self.settings.max_token_ttl, expires)
            jti = self._jti.next()
            token = self.keyring.keyset.signer.sign_payload(template.render(whole_now, lifetime, jti))
            if remembered is None:
                self._remember(self._forms, form_key, (form, post_hash))
        except (AuthError, ServiceError) as exc:
            self.metrics.deny(exc.error)
            self.metrics.latency.observe(time.perf_counter() - started)
            self.audit.emit(
                "token", "denied", reason=exc.error, ip=ip, **audit.client_label(client_id, entry is not None)
            )
            raise
        except Exception:
            self.metrics.deny("server_error")
            raise
        self.metrics.issued.inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        self.audit.issued(jti, whole_now + lifetime, ip, audit_tail)
        return IssuedToken(token, lifetime, template.response_tail)

    @staticmethod
    def _remember(memo: dict[bytes, Any], key: bytes, value: Any) -> None:
        if len(memo) >= _MAX_PARSED:
            memo.clear()
        memo[key] = value

    # -- introspection (RFC 7662) and revocation (RFC 7009) ----------------------------------

    def decode(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this issuer signed and that has not expired, or None."""
        keyset = self.keyring.keyset
        try:
            kid = str(jwt.get_unverified_header(token).get("kid"))
            alg, key = keyset.public_keys[kid]
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg.value],
                issuer=self.settings.issuer,
                options={"verify_aud": False, "require": ["exp", "iat", "jti", "client_id"]},
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            return None
        return claims

    async def introspect(
        self, content_type: bytes | None, authorization: bytes | None, ip: str, read_body: BodyReader
    ) -> dict[str, Any]:
        """RFC 7662: the token's claims if it is active *and* the caller may know about it, else inactive.

        RFC 7662 §4: a caller learns about a token only if it is the token's own client or a resource server
        allowed by ``--introspect-allow``; anyone else gets ``{"active": false}``, the same answer as for a
        token that does not exist, so introspection reveals nothing about other clients' tokens.
        """
        caller, form = await self._caller(content_type, authorization, ip, read_body)
        token = single(form, "token")
        if token is None:
            raise InvalidRequest("token is required")
        caller_id = caller.account.client_id
        claims = self.decode(token)
        if claims is None:
            return INACTIVE
        if claims["client_id"] != caller_id and caller_id not in self._introspectors:
            self.audit.emit("introspect", "refused", client_id=caller_id, ip=ip)
            return INACTIVE
        if await self.store.is_token_revoked(str(claims["jti"])):
            return INACTIVE
        entry = await self.accounts.get(str(claims["client_id"]))
        if entry is None or not entry.usable(self._clock()):
            return INACTIVE
        self.audit.emit("introspect", "active", client_id=caller_id, jti=claims["jti"], ip=ip)
        return {"active": True, "token_type": "Bearer", **{k: claims[k] for k in _INTROSPECTED if k in claims}}

    async def revoke(
        self, content_type: bytes | None, authorization: bytes | None, ip: str, read_body: BodyReader
    ) -> None:
        """RFC 7009: revoke one of the caller's own tokens; an invalid token is no error (§2.2)."""
        caller, form = await self._caller(content_type, authorization, ip, read_body)
        token = single(form, "token")
        if token is None:
            raise InvalidRequest("token is required")
        claims = self.decode(token)
        if claims is None:
            return
        caller_id = caller.account.client_id
        if claims["client_id"] != caller_id:
            raise UnauthorizedClient("the token was not issued to this client")
        now = datetime.fromtimestamp(self._clock(), UTC)
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        event = await self.store.revoke_token(str(claims["jti"]), caller_id, expires, now)
        self.metrics.revocations.labels(kind="token").inc()
        self.feed.notify(event.cursor)
        self.audit.emit("revoke", "revoked", client_id=caller_id, jti=claims["jti"], ip=ip)

"""The OAuth2 endpoints as plain async methods: bytes and headers in, :class:`Reply` out.

HTTP handlers stay thin: they pass the body and a few headers here and write
the reply. Every failure becomes an RFC 6749 §5.2 body; unexpected errors
become ``503 temporarily_unavailable`` without a stack trace in the response.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from credward.domain.claims import ClaimsTemplate, build_claims, choose_audience, token_lifetime
from credward.domain.oauth import (
    ClientCredentials,
    TokenRequest,
    client_credentials,
    parse_form,
    parse_token_request,
    single,
)
from credward.domain.scopes import ScopeProfile, downscope, parse_scope_param
from credward.domain.secrets import SECRET_PREFIX, hash_secret
from credward.domain.throttle import FailureThrottle
from credward.errors import AuthError, InvalidClient, InvalidRequest, Throttled, UnauthorizedClient
from credward.security import audit
from credward.security.accounts import MISS, AccountCache, ClientEntry
from credward.security.feed import RevocationFeed
from credward.security.keys import KeyRing
from credward.security.metrics import Metrics
from credward.security.settings import Settings
from credward.security.store.base import Store

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


JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = field(default=JSON_HEADERS)


def json_reply(status: int, payload: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), JSON_HEADERS + extra)


def error_reply(exc: AuthError) -> Reply:
    extra: tuple[tuple[bytes, bytes], ...] = ()
    if exc.status_code == 401:
        extra = ((b"www-authenticate", b'Basic realm="credward", error="invalid_client"'),)
    elif isinstance(exc, Throttled):
        extra = ((b"retry-after", str(exc.retry_after).encode()),)
    return json_reply(exc.status_code, {"error": exc.error, "error_description": exc.description}, extra)


@dataclass(frozen=True, slots=True)
class NeedAccount:
    """:meth:`OAuthService.token_now` cannot answer before this client's account is loaded from the store."""

    client_id: str


UNAVAILABLE = json_reply(
    503, {"error": "temporarily_unavailable", "error_description": "the service cannot answer right now"}
)


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.accounts = accounts
        self.feed = feed
        self.metrics = metrics
        self._hash_key = hash_key
        self._clock = clock
        self._profile: ScopeProfile = settings.scope_profile
        self.client_throttle = FailureThrottle(settings.throttle_client_failures, settings.throttle_window)
        self.ip_throttle = FailureThrottle(settings.throttle_ip_failures, settings.throttle_window)
        self.audit = audit.AuditLog()
        self._jti = TokenIds()
        # Clients repeat the very same request (same header, same body) for every token. Its parse is kept under
        # an HMAC of the exact request (the key of the secret hashes), with the secret's hash but never the secret:
        # one C call instead of form parsing, Basic decoding and a second HMAC. Only requests that authenticated
        # are kept, and the secret is still checked against the account's live hashes every time.
        self._parsed: dict[bytes, tuple[TokenRequest, str]] = {}

    # -- client authentication -------------------------------------------------------------

    def _check_throttle(self, key: str, throttle: FailureThrottle, now: float) -> None:
        retry = throttle.retry_after(key, now)
        if retry is not None:
            raise Throttled("too many failed authentication attempts; retry later", retry)

    async def _authenticate(self, creds: ClientCredentials, ip: str, now: float) -> ClientEntry:
        # A client id that looks like a secret (fields swapped) is never looked up, so it reaches no store or log.
        entry = None if creds.client_id.startswith(SECRET_PREFIX) else await self.accounts.get(creds.client_id)
        return self._verify(entry, creds.client_id, hash_secret(self._hash_key, creds.client_secret), ip, now)

    def _verify(self, entry: ClientEntry | None, client_id: str, presented: str, ip: str, now: float) -> ClientEntry:
        """Verify the secret; failures count per client id and per address.

        A client id is public (it is in every token), so a locked-out client id
        still accepts its correct secret: otherwise anyone could lock a workload
        out by sending wrong secrets in its name. Past the limit, failures get
        429 instead of 401. The per-address lock (checked before any parsing)
        is absolute and is what sheds an attacker's load.
        """
        if entry is None or not entry.secret_matches(presented, now) or not entry.usable(now):
            locked = self.client_throttle.retry_after(client_id, now)
            self.client_throttle.record_failure(client_id, now)
            self.ip_throttle.record_failure(ip, now)
            if locked is not None:
                raise Throttled("too many failed authentication attempts for this client; retry later", locked)
            raise InvalidClient("client authentication failed")
        return entry

    # -- token endpoint ----------------------------------------------------------------------

    def _template(self, entry: ClientEntry, request: TokenRequest) -> tuple[ClaimsTemplate, str]:
        """Down-scope and pick the audience once per (client, scope, audience); the result is cached on the entry.

        Returns the claims template and the static tail of the audit line.
        """
        method = request.credentials.method.value
        key = (request.scope, request.audiences, method)
        cached = entry.templates.get(key)
        if cached is not None:
            return cached
        requested = parse_scope_param(self._profile, request.scope) if request.scope is not None else None
        scopes = downscope(entry.held_scopes, requested)
        account = entry.account
        audience = choose_audience(self._profile, account.audiences, request.audiences)
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
        audit_tail = self.audit.issued_static(account.client_id, grant.scope, audience, method)
        entry.templates[key] = result = (ClaimsTemplate(grant), audit_tail)
        return result

    def _remember(self, key: bytes, request: TokenRequest, presented: str) -> None:
        """Keep the parse of a request that authenticated, without its secret (only the secret's keyed hash)."""
        if len(self._parsed) >= _MAX_PARSED:
            self._parsed.clear()
        creds = request.credentials
        blank = TokenRequest(
            request.grant_type, ClientCredentials(creds.client_id, "", creds.method), request.scope, request.audiences
        )
        self._parsed[key] = (blank, presented)

    async def token(self, body: bytes, content_type: str | None, authorization: str | None, ip: str) -> Reply:
        """RFC 6749 §4.4; awaits the store only when the client's account is not cached."""
        reply = self.token_now(body, content_type, authorization, ip)
        if isinstance(reply, NeedAccount):
            try:
                entry = await self.accounts.get(reply.client_id)
            except Exception:
                log.exception("token request failed")
                self.metrics.deny("server_error")
                return UNAVAILABLE
            reply = self.token_now(body, content_type, authorization, ip, loaded=(reply.client_id, entry))
            assert isinstance(reply, Reply)  # the loaded entry is used even when the cache keeps nothing
        return reply

    def token_now(
        self,
        body: bytes,
        content_type: str | None,
        authorization: str | None,
        ip: str,
        loaded: tuple[str, ClientEntry | None] | None = None,
    ) -> Reply | NeedAccount:
        """The token request without awaiting (the hot path), or which account must be loaded first.

        No store access when the account is cached, and no per-token JSON
        encoding. ``loaded`` is an account just read from the store. Nothing
        is counted or logged before a :class:`NeedAccount` is returned, so the
        call can simply be repeated once the account is loaded.
        """
        started = time.perf_counter()
        now = self._clock()
        client_id: str | None = None
        entry: ClientEntry | None = None
        try:
            self._check_throttle(ip, self.ip_throttle, now)
            memo_key = hmac.digest(self._hash_key, f"{authorization}\n{content_type}\n".encode() + body, "sha256")
            memo = self._parsed.get(memo_key)
            if memo is None:
                try:
                    request = parse_token_request(body, content_type, authorization)
                except InvalidClient:
                    if authorization:  # malformed Basic credentials count as a failed attempt
                        self.ip_throttle.record_failure(ip, now)
                    raise
                presented = hash_secret(self._hash_key, request.credentials.client_secret)
            else:
                request, presented = memo
            client_id = request.credentials.client_id
            if client_id.startswith(SECRET_PREFIX):  # fields swapped: never looked up, so it reaches no store or log
                found = None
            elif loaded is not None and loaded[0] == client_id:
                found = loaded[1]
            else:
                peeked = self.accounts.peek(client_id, now)
                if peeked is MISS:
                    return NeedAccount(client_id)
                found = peeked
            entry = self._verify(found, client_id, presented, ip, now)
            if memo is None:
                self._remember(memo_key, request, presented)
            template, audit_tail = self._template(entry, request)
            whole_now = int(now)
            expires = int(entry.expires_at) if entry.expires_at is not None else None
            lifetime = token_lifetime(whole_now, entry.account.token_ttl_seconds, self.settings.max_token_ttl, expires)
            jti = self._jti.next()
            token = self.keyring.keyset.signer.sign_payload(template.render(whole_now, lifetime, jti))
        except AuthError as exc:
            self.metrics.deny(exc.error)
            self.metrics.latency.observe(time.perf_counter() - started)
            self.audit.emit(
                "token", "denied", reason=exc.error, ip=ip, **audit.client_label(client_id, entry is not None)
            )
            return error_reply(exc)
        except Exception:
            log.exception("token request failed")
            self.metrics.deny("server_error")
            return UNAVAILABLE
        self.metrics.issued.inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        self.audit.issued(jti, whole_now + lifetime, ip, audit_tail)
        body = b'{"access_token":"' + token + b'","token_type":"Bearer","expires_in":' + str(lifetime).encode()
        return Reply(200, body + template.response_tail)

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

    async def _caller_and_token(
        self, body: bytes, content_type: str | None, authorization: str | None, ip: str
    ) -> tuple[ClientEntry, str]:
        """Authenticate the calling client (RFC 7662 §2.1, RFC 7009 §2.1) and read the ``token`` parameter."""
        form = parse_form(body, content_type)
        now = self._clock()
        self._check_throttle(ip, self.ip_throttle, now)
        caller = await self._authenticate(client_credentials(form, authorization), ip, now)
        token = single(form, "token")
        if token is None:
            raise InvalidRequest("token is required")
        return caller, token

    async def introspect(self, body: bytes, content_type: str | None, authorization: str | None, ip: str) -> Reply:
        try:
            caller, token = await self._caller_and_token(body, content_type, authorization, ip)
            claims = self.decode(token)
            if claims is None or await self.store.is_token_revoked(str(claims["jti"])):
                return json_reply(200, {"active": False})
            entry = await self.accounts.get(str(claims["client_id"]))
            if entry is None or not entry.usable(self._clock()):
                return json_reply(200, {"active": False})
        except AuthError as exc:
            return error_reply(exc)
        except Exception:
            log.exception("introspection failed")
            return UNAVAILABLE
        self.audit.emit("introspect", "active", client_id=caller.account.client_id, jti=claims["jti"], ip=ip)
        keep = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "roles", "wlcg.groups")
        return json_reply(200, {"active": True, "token_type": "Bearer", **{k: claims[k] for k in keep if k in claims}})

    async def revoke(self, body: bytes, content_type: str | None, authorization: str | None, ip: str) -> Reply:
        try:
            caller, token = await self._caller_and_token(body, content_type, authorization, ip)
            claims = self.decode(token)
            if claims is None:  # RFC 7009 §2.2: invalid tokens do not cause an error
                return Reply(200, b"")
            if claims["client_id"] != caller.account.client_id:
                raise UnauthorizedClient("the token was not issued to this client")
            now = datetime.fromtimestamp(self._clock(), UTC)
            event = await self.store.revoke_token(
                str(claims["jti"]), caller.account.client_id, datetime.fromtimestamp(int(claims["exp"]), UTC), now
            )
        except AuthError as exc:
            return error_reply(exc)
        except Exception:
            log.exception("revocation failed")
            return UNAVAILABLE
        self.metrics.revocations.labels(kind="token").inc()
        self.feed.notify(event.cursor)
        self.audit.emit("revoke", "revoked", client_id=caller.account.client_id, jti=claims["jti"], ip=ip)
        return Reply(200, b"")

"""A self-renewing bearer-token authorizer for workloads (OAuth2 client-credentials grant, RFC 6749 §4.4).

One object serves every HTTP stack a workload uses: it is an ``httpx.Auth``
(``httpx.Client(auth=a)`` and ``httpx.AsyncClient(auth=a)``) and a ``requests``
auth (``session.auth = a``). It

* fetches a token with ``client_secret_basic`` and caches it;
* fetches the next one ``refresh_margin`` seconds before expiry (at most half
  the lifetime early), so a resource server whose clock runs ahead still takes
  it; the lifetime is the answer's ``expires_in``, counted from when the request
  was sent, so the workload's own clock does not matter;
* after a 401 from a resource server, drops that token and retries once with a
  new one;
* fetches under a lock: one fetch however many threads (``threading.Lock``) or
  tasks of one event loop (an ``asyncio.Lock`` per loop) want a token at once;
* re-reads the mounted secret when the kubelet swaps it (:class:`SecretFile`);
* logs a token's fingerprint at most, never the token or the secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote_plus

import httpx

from credward.client.credentials import ClientSettings, Credentials, SecretFile
from credward.client.discovery import json_object, metadata_request, parse_metadata, transport_error
from credward.client.errors import ClientConfigError, IssuerUnavailable, TokenEndpointError
from credward.domain.oauth import FORM_CONTENT_TYPE, GRANT_CLIENT_CREDENTIALS
from credward.domain.secrets import fingerprint

if TYPE_CHECKING:
    import requests

log = logging.getLogger("credward.client")

DEFAULT_REFRESH_MARGIN = 60.0
DEFAULT_LIFETIME = 60.0  # when an answer leaves out expires_in (RFC 6749 only recommends it)
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A token and when to replace it, in the authorizer's clock (monotonic seconds)."""

    value: str = field(repr=False)
    refresh_at: float
    expires_at: float

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)


def refresh_deadline(sent_at: float, expires_in: float, margin: float) -> float:
    """When to fetch the next token: ``margin`` before expiry, but never more than half the lifetime early."""
    return sent_at + expires_in - min(margin, expires_in / 2)


def basic_authorization(client_id: str, secret: str) -> str:
    """``client_secret_basic`` (RFC 6749 §2.3.1): both parts form-urlencoded, then Base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_form(scope: Sequence[str], audiences: Sequence[str]) -> dict[str, str | list[str]]:
    """The token request's form; ``audience`` repeats once per value (RFC 8707 style)."""
    form: dict[str, str | list[str]] = {"grant_type": GRANT_CLIENT_CREDENTIALS}
    if scope:
        form["scope"] = " ".join(scope)
    if audiences:
        form["audience"] = list(audiences)
    return form


def parse_token_response(response: httpx.Response, sent_at: float, margin: float, secret: str) -> CachedToken:
    """A 200 answer as a :class:`CachedToken`; an RFC 6749 §5.2 error as :class:`TokenEndpointError`."""
    if response.status_code >= 500 or (response.status_code != 200 and not _is_json(response)):
        raise IssuerUnavailable(f"token endpoint {response.request.url} answered {response.status_code}")
    if response.status_code != 200:
        body = _json_or_empty(response)
        error = body.get("error") if isinstance(body.get("error"), str) else "invalid_request"
        described = body.get("error_description")
        description = described if isinstance(described, str) else "(no description)"
        if secret and secret in description:  # a service would never echo it; make sure anyway
            description = description.replace(secret, "[redacted]")
        raise TokenEndpointError(str(error), description, response.status_code)
    body = json_object(response, "token response")
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise IssuerUnavailable(f"token response from {response.request.url} has no access_token")
    if str(body.get("token_type", "")).lower() != "bearer":
        raise IssuerUnavailable(f"token response from {response.request.url} is not a Bearer token")
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else DEFAULT_LIFETIME
    return CachedToken(token, refresh_deadline(sent_at, lifetime, margin), sent_at + lifetime)


def _is_json(response: httpx.Response) -> bool:
    media_type: str = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json"


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class ClientCredentialsAuthorizer(httpx.Auth):
    """Bearer tokens for one service account, renewed before they expire (see the module docstring)."""

    requires_request_body = True  # a request retried after a 401 must be sent again whole

    def __init__(
        self,
        settings: ClientSettings,
        *,
        scope: str | Sequence[str] = (),
        audience: str | Sequence[str] = (),
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        timeout: float = DEFAULT_TIMEOUT,
        verify: ssl.SSLContext | bool = True,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._secret = SecretFile(settings)
        self._scope = tuple(scope.split()) if isinstance(scope, str) else tuple(scope)
        self._audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        self._margin = refresh_margin
        self._timeout = timeout
        self._verify = verify
        self._http = http_client
        self._owns_http = http_client is None
        self._clock = clock
        self._token: CachedToken | None = None
        self._token_url: str | None = settings.token_url
        self._lock = threading.Lock()
        self._loop_locks_guard = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._fetches = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """From ``CLIENT_ID``, ``CLIENT_SECRET_PATH``, ``SECURITY_BASE_URL`` (the variables credward's webhook sets).

        ``secret_path``, ``client_id``, ``base_url`` and ``token_url`` among ``options``
        win over the environment; the other options go to the constructor.
        """
        names = ("secret_path", "client_id", "base_url", "token_url")
        overrides = {k: options.pop(k) for k in names if k in options}
        settings = ClientSettings.from_env(os.environ if environ is None else environ, **overrides)
        return cls(settings, **options)

    # -- tokens ---------------------------------------------------------------------------------------

    @property
    def fetch_count(self) -> int:
        """How many tokens this authorizer has fetched (for metrics and tests)."""
        return self._fetches

    @property
    def client_id(self) -> str:
        return self._secret.current().client_id

    def _fresh(self) -> CachedToken | None:
        token = self._token
        return token if token is not None and self._clock() < token.refresh_at else None

    def get_token(self) -> str:
        """A valid access token, fetched (blocking) only when the cached one is due for renewal."""
        token = self._fresh()
        if token is not None:
            return token.value
        with self._lock:
            token = self._fresh()
            if token is None:
                token = self._fetch_sync()
            return token.value

    async def aget_token(self) -> str:
        """:meth:`get_token` for asyncio: tasks of one loop share one fetch, and the loop is never blocked."""
        token = self._fresh()
        if token is not None:
            return token.value
        async with self._async_lock():
            token = self._fresh()
            if token is None:
                token = await self._fetch_async()
            return token.value

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (only if it is ``token``, so a newer one fetched meanwhile survives)."""
        current = self._token
        if current is not None and (token is None or current.value == token):
            self._token = None

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._loop_locks_guard:  # never the fetch lock: a sync fetch in another thread must not block the loop
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    def _request(self, token_url: str, creds: Credentials) -> httpx.Request:
        return httpx.Request(
            "POST",
            token_url,
            data=token_form(self._scope, self._audiences),
            headers={
                "Authorization": basic_authorization(creds.client_id, creds.secret),
                "Content-Type": FORM_CONTENT_TYPE,
                "Accept": "application/json",
            },
        )

    def _accept(self, token: CachedToken, creds: Credentials) -> CachedToken:
        self._token = token
        self._fetches += 1
        log.debug(
            "fetched a token for client %s (token %s, renewal in %.0fs)",
            creds.client_id,
            token.fingerprint,
            token.refresh_at - self._clock(),
        )
        return token

    def _fetch_sync(self) -> CachedToken:
        creds = self._secret.current()
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout, verify=self._verify)
        http = self._http
        url = self._token_url or self._discover_sync(http)
        sent_at = self._clock()
        try:
            response = http.send(self._request(url, creds))
        except httpx.HTTPError as exc:
            raise transport_error("token endpoint", url, exc) from None
        return self._accept(parse_token_response(response, sent_at, self._margin, creds.secret), creds)

    async def _fetch_async(self) -> CachedToken:
        creds = self._secret.current()
        async with httpx.AsyncClient(timeout=self._timeout, verify=self._verify) as http:
            url = self._token_url or await self._discover_async(http)
            sent_at = self._clock()
            try:
                response = await http.send(self._request(url, creds))
            except httpx.HTTPError as exc:
                raise transport_error("token endpoint", url, exc) from None
        return self._accept(parse_token_response(response, sent_at, self._margin, creds.secret), creds)

    def _from_file_or_none(self) -> str | None:
        url = self._secret.token_url_file()
        if url is not None:
            self._token_url = url
        return url

    def _discovery_base(self) -> str:
        if self._settings.base_url is None:
            raise ClientConfigError("no token endpoint: no token-url file and no SECURITY_BASE_URL for discovery")
        return self._settings.base_url

    def _discover_sync(self, http: httpx.Client) -> str:
        url = self._from_file_or_none()
        if url is not None:
            return url
        request = metadata_request(self._discovery_base())
        try:
            response = http.send(request)
        except httpx.HTTPError as exc:
            raise transport_error("discovery", str(request.url), exc) from None
        return self._remember_endpoint(response)

    async def _discover_async(self, http: httpx.AsyncClient) -> str:
        url = self._from_file_or_none()
        if url is not None:
            return url
        request = metadata_request(self._discovery_base())
        try:
            response = await http.send(request)
        except httpx.HTTPError as exc:
            raise transport_error("discovery", str(request.url), exc) from None
        return self._remember_endpoint(response)

    def _remember_endpoint(self, response: httpx.Response) -> str:
        endpoint = parse_metadata(response).token_endpoint
        if endpoint is None:
            raise IssuerUnavailable(f"discovery document at {response.request.url} names no token_endpoint")
        self._token_url = endpoint
        return endpoint

    # -- httpx.Auth -----------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {self.get_token()}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.aget_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {await self.aget_token()}"
            yield request

    # -- requests -------------------------------------------------------------------------------------

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """``requests`` auth: set the bearer token and retry once on a 401 (as ``HTTPDigestAuth`` does)."""
        token = self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        body: Any = request.body  # bytes, str, None, or a file-like object that must be rewound for a retry
        position = body.tell() if hasattr(body, "tell") and hasattr(body, "seek") else None
        retried = False

        def retry_on_401(response: requests.Response, **kwargs: Any) -> requests.Response:
            nonlocal retried
            if response.status_code != 401 or retried:
                return response
            retried = True
            self.invalidate(token)
            if position is not None:
                body.seek(position)
            response.content  # noqa: B018 - drain the 401 so its connection can be reused
            response.close()
            again = response.request.copy()
            again.headers["Authorization"] = f"Bearer {self.get_token()}"
            retry: requests.Response = response.connection.send(again, **kwargs)
            retry.history.append(response)
            retry.request = again
            return retry

        request.register_hook("response", retry_on_401)  # type: ignore[no-untyped-call]
        return request

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._http is not None and self._owns_http:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        token = self._token
        state = f"token {token.fingerprint}" if token is not None else "no token"
        return f"<ClientCredentialsAuthorizer {self._settings.secret_path} ({state})>"

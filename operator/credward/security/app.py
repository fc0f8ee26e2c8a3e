"""The ASGI application: every endpoint is one module-level function here, over the services.

An endpoint takes the :class:`Services` and the request, calls one service, and returns a
:class:`~credward.security.edge.Reply` (or a streaming response). :class:`Endpoint` runs it and is the one
place where a raised error becomes its answer (:func:`~credward.security.edge.error_reply`). Starlette
routes; the two endpoints that are measured per request (``POST /oauth2/token`` and ``GET /healthz``) are
looked up in a dict first, the same :class:`Endpoint` objects the router holds, so routing costs nothing
there and there is still one implementation of each.

No path the service serves has a percent-encoded character, so a request whose raw path holds ``%`` is
answered 404 before routing: ``/oauth2%2Ftoken`` is not the token endpoint, and ``%2e%2e`` is no client id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, Router

from credward.api import SERVICE_ACCOUNT_VERBS
from credward.api.admin import AccountIn, BatchIn, RoleMappingsIn
from credward.domain.oauth import MAX_BODY_BYTES
from credward.domain.scopes import ScopeProfile, verb_action
from credward.domain.secrets import hash_key_id
from credward.errors import InvalidRequest, NotFound
from credward.security.accounts import AccountCache
from credward.security.admin import AdminService, check_client_id, parse_body
from credward.security.adminauth import AdminAuthenticator
from credward.security.edge import (
    Receive,
    Reply,
    Scope,
    Send,
    error_reply,
    json_reply,
    oauth_headers,
    read_body,
    send_reply,
)
from credward.security.feed import RevocationFeed, event_json
from credward.security.keys import KeyRing
from credward.security.metrics import Metrics
from credward.security.openapi import openapi_document
from credward.security.service import OAuthService
from credward.security.settings import Settings
from credward.security.store.base import Store
from credward.security.usage import UsageTracker

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/token"
ADMIN_MAX_BODY_BYTES = 1024 * 1024
PURGE_INTERVAL = 600.0
_PUBLIC_JSON = ((b"content-type", b"application/json"),)


@dataclass(frozen=True)
class Services:
    """Everything the endpoints call, built once per app."""

    settings: Settings
    store: Store
    keyring: KeyRing
    accounts: AccountCache
    feed: RevocationFeed
    metrics: Metrics
    oauth: OAuthService
    admin: AdminService
    admin_auth: AdminAuthenticator
    clock: Callable[[], float]
    discovery: Reply
    openapi: Reply

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 authorization server metadata, also served at the OIDC discovery path (see docs).

    Only what is true: no authorization endpoint, so ``response_types_supported`` is empty (RFC 8414 makes
    the member REQUIRED; RFC 7591 §2.1 pairs the client_credentials grant with no response type), no ID
    tokens (so no ``id_token_signing_alg_values_supported``), no JWT client authentication (so no
    ``token_endpoint_auth_signing_alg_values_supported``). ``scopes_supported`` lists each scope at the
    root; a scope covers its path and everything below it, so ``storage.read:/data`` is one of its kind.
    """
    base = settings.issuer
    auth_methods = ["client_secret_basic", "client_secret_post"]
    profile = settings.scope_profile
    claims = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "client_id", "scope", "roles", "wlcg.ver", "wlcg.groups"]
    if profile is ScopeProfile.SCITOKENS:
        claims.append("ver")
    return {
        "issuer": base,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + "/jwks.json",
        "introspection_endpoint": base + "/oauth2/introspect",
        "revocation_endpoint": base + "/oauth2/revoke",
        "revocation_feed_endpoint": base + "/v1/revocations",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": [f"{verb_action(profile, verb)}:/" for verb in SERVICE_ACCOUNT_VERBS],
        "subject_types_supported": ["public"],
        "claims_supported": claims,
    }


def build_services(
    settings: Settings,
    store: Store,
    admin_auth: AdminAuthenticator,
    hash_key: bytes,
    clock: Callable[[], float] = time.time,
) -> Services:
    keyring = KeyRing(settings.keys_dir, settings.signing_alg, settings.dev_mode)
    accounts = AccountCache(store, settings.scope_profile, settings.account_cache_ttl, clock)
    metrics = Metrics()
    feed = RevocationFeed(store, metrics, keepalive=settings.feed_max_wait, buffer=settings.feed_subscriber_buffer)
    usage = UsageTracker(store, metrics)
    oauth = OAuthService(settings, store, keyring, accounts, feed, metrics, hash_key, clock, usage)
    admin = AdminService(
        store,
        accounts,
        feed,
        metrics,
        issuer_host=settings.issuer_host,
        max_token_ttl=settings.max_token_ttl,
        hash_key_id=hash_key_id(hash_key),
        usage=usage,
        usage_window=settings.usage_window,
    )
    discovery = Reply(
        200,
        json.dumps(metadata(settings), separators=(",", ":")).encode(),
        (*_PUBLIC_JSON, (b"cache-control", b"public, max-age=300")),
    )
    openapi = Reply(200, json.dumps(openapi_document(settings)).encode(), _PUBLIC_JSON)
    return Services(
        settings, store, keyring, accounts, feed, metrics, oauth, admin, admin_auth, clock, discovery, openapi
    )


def _ip(request: Request) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


# -- OAuth endpoints ---------------------------------------------------------------------------


async def token(svc: Services, request: Request) -> Reply:
    """``POST /oauth2/token`` (RFC 6749 §4.4); the body is read only once a Basic client has authenticated."""
    content_type, authorization = oauth_headers(request.scope["headers"])
    body = partial(read_body, request.receive, MAX_BODY_BYTES)
    issued = await svc.oauth.token(content_type, authorization, _ip(request), body)
    return Reply(
        200,
        b'{"access_token":"'
        + issued.access_token
        + b'","token_type":"Bearer","expires_in":'
        + str(issued.expires_in).encode()
        + issued.response_tail,
    )


async def introspect(svc: Services, request: Request) -> Reply:
    """``POST /oauth2/introspect`` (RFC 7662)."""
    content_type, authorization = oauth_headers(request.scope["headers"])
    body = partial(read_body, request.receive, MAX_BODY_BYTES)
    return json_reply(200, await svc.oauth.introspect(content_type, authorization, _ip(request), body))


async def revoke(svc: Services, request: Request) -> Reply:
    """``POST /oauth2/revoke`` (RFC 7009)."""
    content_type, authorization = oauth_headers(request.scope["headers"])
    body = partial(read_body, request.receive, MAX_BODY_BYTES)
    await svc.oauth.revoke(content_type, authorization, _ip(request), body)
    return Reply(200, b"")


async def discovery(svc: Services, request: Request) -> Reply:
    """``GET /.well-known/oauth-authorization-server`` and ``/.well-known/openid-configuration``."""
    return svc.discovery


async def jwks(svc: Services, request: Request) -> Reply:
    body = json.dumps(svc.keyring.keyset.jwks, separators=(",", ":")).encode()
    return Reply(200, body, (*_PUBLIC_JSON, (b"cache-control", b"public, max-age=60")))


async def revocations(svc: Services, request: Request) -> Reply | Response:
    """``GET /v1/revocations?since=&wait=``: JSON long-poll, or server-sent events (``Accept: text/event-stream``)."""
    try:
        since = int(request.query_params.get("since", "0"))
        wait = float(request.query_params.get("wait", "0"))
        if since < 0 or not math.isfinite(wait):
            raise ValueError
    except ValueError:
        raise InvalidRequest("since must be a cursor (an integer >= 0), wait a number of seconds") from None
    if "text/event-stream" in request.headers.get("accept", ""):
        last = request.headers.get("last-event-id", "")
        if last.isdigit():  # a reconnecting EventSource resumes after the last event it saw
            since = max(since, int(last))
        since = await svc.feed.resume_point(since)
        stream = svc.feed.stream(since)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    since = await svc.feed.resume_point(since)
    events = await svc.feed.wait_since(since, min(max(wait, 0.0), svc.settings.feed_max_wait))
    cursor = events[-1].cursor if events else since
    return json_reply(200, {"events": [event_json(e) for e in events], "cursor": cursor})


# -- operations --------------------------------------------------------------------------------

HEALTHY = Reply(200, b'{"status":"ok"}', _PUBLIC_JSON)


async def healthz(svc: Services, request: Request) -> Reply:
    return HEALTHY


async def readyz(svc: Services, request: Request) -> Reply:
    """Ready when the store answers and the signing keys are loaded."""
    try:
        await svc.store.ping()
        kid = svc.keyring.keyset.signer.kid
    except Exception as exc:
        return json_reply(503, {"status": "unavailable", "reason": type(exc).__name__})
    return json_reply(200, {"status": "ready", "kid": kid})


async def metrics(svc: Services, request: Request) -> Reply:
    return Reply(200, generate_latest(svc.metrics.registry), ((b"content-type", CONTENT_TYPE_LATEST.encode()),))


async def openapi(svc: Services, request: Request) -> Reply:
    return svc.openapi


# -- admin API ---------------------------------------------------------------------------------


async def _admin_call(svc: Services, request: Request) -> str:
    """Authenticate the admin caller and return the client id of the path (checked); logs who did what."""
    caller = await svc.admin_auth.authenticate(request.headers.get("authorization"))
    log.info("admin %s %s by %s", request.method, request.url.path, caller)
    return check_client_id(request.path_params["client_id"]) if "client_id" in request.path_params else ""


def _view_reply(status: int, model: Any) -> Reply:
    return Reply(status, model.model_dump_json(by_alias=True).encode())


async def admin_info(svc: Services, request: Request) -> Reply:
    """``GET /v1/admin/info`` -> ServiceInfo."""
    await _admin_call(svc, request)
    return _view_reply(200, await svc.admin.info())


async def get_account(svc: Services, request: Request) -> Reply:
    """``GET /v1/admin/accounts/{clientId}`` -> AccountView, 404 if missing."""
    client_id = await _admin_call(svc, request)
    return _view_reply(200, await svc.admin.get(client_id, svc.now()))


async def put_account(svc: Services, request: Request) -> Reply:
    """``PUT /v1/admin/accounts/{clientId}`` with AccountIn -> AccountView, 201 created / 200 replaced."""
    client_id = await _admin_call(svc, request)
    data = parse_body(AccountIn, await read_body(request.receive, ADMIN_MAX_BODY_BYTES))
    view, created = await svc.admin.put_account(client_id, data, svc.now())
    return _view_reply(201 if created else 200, view)


async def put_role_mappings(svc: Services, request: Request) -> Reply:
    """``PUT /v1/admin/accounts/{clientId}/role-mappings`` with RoleMappingsIn -> AccountView, 404 if missing."""
    client_id = await _admin_call(svc, request)
    data = parse_body(RoleMappingsIn, await read_body(request.receive, ADMIN_MAX_BODY_BYTES))
    return _view_reply(200, await svc.admin.set_role_mappings(client_id, data, svc.now()))


async def revoke_account(svc: Services, request: Request) -> Reply:
    """``POST /v1/admin/accounts/{clientId}/revoke`` -> the feed event, 404 if missing."""
    client_id = await _admin_call(svc, request)
    return json_reply(200, event_json(await svc.admin.revoke(client_id, svc.now())))


async def delete_account(svc: Services, request: Request) -> Reply:
    """``DELETE /v1/admin/accounts/{clientId}`` -> 204, 404 if there was no such account."""
    client_id = await _admin_call(svc, request)
    await svc.admin.delete(client_id)
    return Reply(204, b"", ())


async def admin_batch(svc: Services, request: Request) -> Reply:
    """``POST /v1/admin/batch`` with BatchIn -> BatchOut: many account operations in one request (the operator's)."""
    await _admin_call(svc, request)
    data = parse_body(BatchIn, await read_body(request.receive, ADMIN_MAX_BODY_BYTES))
    for op in data.operations:
        log.info("admin batch %s %s", op.op, op.client_id)
    return _view_reply(200, await svc.admin.batch(data, svc.now()))


EndpointFunction = Callable[[Services, Request], Awaitable[Reply | Response]]
ACCOUNT = "/v1/admin/accounts/{client_id}"
ENDPOINTS: tuple[tuple[str, str, EndpointFunction], ...] = (
    ("POST", TOKEN_PATH, token),
    ("POST", "/oauth2/introspect", introspect),
    ("POST", "/oauth2/revoke", revoke),
    ("GET", "/.well-known/oauth-authorization-server", discovery),
    ("GET", "/.well-known/openid-configuration", discovery),
    ("GET", "/jwks.json", jwks),
    ("GET", "/v1/revocations", revocations),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
    ("GET", "/v1/admin/info", admin_info),
    ("POST", "/v1/admin/batch", admin_batch),
    ("GET", ACCOUNT, get_account),
    ("PUT", ACCOUNT, put_account),
    ("DELETE", ACCOUNT, delete_account),
    ("PUT", ACCOUNT + "/role-mappings", put_role_mappings),
    ("POST", ACCOUNT + "/revoke", revoke_account),
)
DIRECT = {("POST", TOKEN_PATH), ("GET", "/healthz")}


class Endpoint:
    """One endpoint as an ASGI app: the one place where what it raised becomes its answer."""

    __slots__ = ("_function", "_services")

    def __init__(self, services: Services, function: EndpointFunction) -> None:
        self._services = services
        self._function = function

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            result = await self._function(self._services, Request(scope, receive))
        except Exception as exc:
            result = error_reply(exc)
        if isinstance(result, Reply):
            await send_reply(send, result)
        else:
            await result(scope, receive, send)


_NOT_SERVED = NotFound("no resource here: paths with percent-encoded characters are not served")


class CredwardApp:
    """ASGI entry point: refuses percent-encoded paths, answers the hot endpoints directly, routes the rest."""

    def __init__(self, direct: dict[tuple[str, str], Endpoint], router: Router, services: Services) -> None:
        self._direct = direct
        self._router = router
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            if raw is not None and b"%" in raw.split(b"?", 1)[0]:
                await send_reply(send, error_reply(_NOT_SERVED))
                return
            endpoint = self._direct.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self._router(scope, receive, send)


async def _every(interval: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await work()
        except Exception:
            log.exception("%s failed", what)


def create_app(
    settings: Settings,
    store: Store,
    admin_auth: AdminAuthenticator,
    hash_key: bytes,
    clock: Callable[[], float] = time.time,
) -> CredwardApp:
    """The service around an open store; its lifespan migrates the store, follows the feed and closes both."""
    svc = build_services(settings, store, admin_auth, hash_key, clock)

    async def reload_keys() -> None:
        svc.keyring.reload_if_changed()

    async def purge() -> None:
        await svc.store.purge_expired(svc.now())
        await svc.store.purge_usage(svc.now() - timedelta(seconds=settings.usage_window))

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        await svc.store.migrate()
        await svc.feed.start()
        tasks = [
            asyncio.create_task(_every(settings.key_reload_interval, reload_keys, "key reload")),
            asyncio.create_task(_every(PURGE_INTERVAL, purge, "purge")),
            asyncio.create_task(_every(settings.usage_flush_interval, svc.oauth.usage.flush, "usage flush")),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.feed.close()
            with contextlib.suppress(Exception):  # the last uses seen: kept if the store still answers
                await svc.oauth.usage.flush()
            svc.oauth.audit.flush()
            await svc.admin_auth.close()
            await svc.store.close()

    endpoints = {(method, path): Endpoint(svc, function) for method, path, function in ENDPOINTS}
    routes: list[BaseRoute] = [
        Route(path, endpoint, methods=[method]) for (method, path), endpoint in endpoints.items()
    ]
    router = Router(routes, redirect_slashes=False, lifespan=lifespan)
    return CredwardApp({key: endpoints[key] for key in DIRECT}, router, svc)

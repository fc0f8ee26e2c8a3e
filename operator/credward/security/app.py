"""The ASGI application: a raw fast path for the token endpoint, Starlette for everything else.

``POST /oauth2/token`` is served by a few lines of plain ASGI because it is
the only hot endpoint: skipping the framework's request object, routing and
middleware measured as a large share of the per-request cost (see
``bench/token_endpoint.py``). Every other route is an ordinary Starlette
handler. Handlers are thin: they read bytes and headers and call
:class:`~credward.security.service.OAuthService` or
:class:`~credward.security.admin.AdminService`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from credward.domain.oauth import MAX_BODY_BYTES
from credward.errors import AdminAuthError, InvalidRequest
from credward.security.accounts import AccountCache
from credward.security.admin import AdminService, BadAdminRequest, NotFound, account_view
from credward.security.adminauth import AdminAuthenticator
from credward.security.feed import RevocationFeed, event_json
from credward.security.keys import KeyRing
from credward.security.metrics import Metrics
from credward.security.openapi import openapi_document
from credward.security.service import OAuthService, Reply, error_reply
from credward.security.settings import Settings
from credward.security.store.base import Store
from credward.security.store.codec import UnstorableText

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_PATH = "/oauth2/token"
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,253}")
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class Components:
    """Everything a running app holds; tests reach in through ``app.state.components``."""

    settings: Settings
    store: Store
    keyring: KeyRing
    accounts: AccountCache
    feed: RevocationFeed
    metrics: Metrics
    oauth: OAuthService
    admin: AdminService
    admin_auth: AdminAuthenticator


def build_components(
    settings: Settings,
    store: Store,
    admin_auth: AdminAuthenticator,
    hash_key: bytes,
    clock: Callable[[], float] = time.time,
) -> Components:
    keyring = KeyRing(settings.keys_dir, settings.signing_alg, settings.dev_mode)
    accounts = AccountCache(store, settings.scope_profile, settings.account_cache_ttl, clock)
    feed = RevocationFeed(store)
    metrics = Metrics()
    oauth = OAuthService(settings, store, keyring, accounts, feed, metrics, hash_key, clock)
    admin = AdminService(store, accounts, feed, metrics, settings.issuer_host)
    return Components(settings, store, keyring, accounts, feed, metrics, oauth, admin, admin_auth)


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 / OIDC discovery; the id_token and response type fields satisfy OIDC libraries that require them."""
    base = settings.issuer
    auth_methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": base,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + "/jwks.json",
        "introspection_endpoint": base + "/oauth2/introspect",
        "revocation_endpoint": base + "/oauth2/revoke",
        "revocation_feed_endpoint": base + "/v1/revocations",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.signing_alg.value],
        "token_endpoint_auth_signing_alg_values_supported": [settings.signing_alg.value],
        "scopes_supported": [],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "iat",
            "nbf",
            "exp",
            "jti",
            "client_id",
            "scope",
            "roles",
            "wlcg.ver",
            "wlcg.groups",
        ],
    }


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if it is larger than the token endpoint accepts."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


TOO_LARGE = error_reply(InvalidRequest("the request body is too large"))
# Which of two Authorization (or Content-Type) headers counts differs between HTTP stacks (first or last),
# so a request that carries either twice is refused outright (RFC 6749 §5.2 invalid_request), never answered.
REPEATED_HEADER = error_reply(InvalidRequest("the Authorization and Content-Type headers must not be repeated"))

HEALTHY = Reply(200, b'{"status":"ok"}', ((b"content-type", b"application/json"),))


def _reply_response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, headers={k.decode(): v.decode() for k, v in reply.headers})


class CredwardApp:
    """ASGI entry point: the token endpoint directly, everything else through Starlette."""

    def __init__(self, components: Components, starlette: Starlette) -> None:
        self.components = components
        self.starlette = starlette
        self._oauth = components.oauth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            await self._token(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] == "GET":
            await _send_reply(send, HEALTHY)  # liveness: no framework, and the bench's HTTP-only floor
        else:
            await self.starlette(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = authorization = None
        repeated = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                repeated |= content_type is not None
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                repeated |= authorization is not None
                authorization = value.decode("latin-1")
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        body = await _read_body(receive)
        if body is None:
            reply = TOO_LARGE
        elif repeated:
            reply = REPEATED_HEADER
        else:
            reply = await self._oauth.token(body, content_type, authorization, ip)
        await _send_reply(send, reply)


ADMIN_MAX_BODY_BYTES = 1024 * 1024


async def _limited_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (never buffer an unbounded body from the network)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(
    settings: Settings,
    store: Store,
    admin_auth: AdminAuthenticator,
    hash_key: bytes,
    clock: Callable[[], float] = time.time,
) -> CredwardApp:
    """Build the service around an open store; the lifespan migrates it, watches keys and closes it."""
    c = build_components(settings, store, admin_auth, hash_key, clock)
    discovery = metadata(settings)
    openapi = openapi_document(settings)

    async def well_known(request: Request) -> Response:
        return JSONResponse(discovery, headers={"Cache-Control": "public, max-age=300"})

    async def jwks(request: Request) -> Response:
        return JSONResponse(c.keyring.keyset.jwks, headers={"Cache-Control": "public, max-age=60"})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    def _header_problem(request: Request) -> Reply | None:
        headers = request.headers
        if any(len(headers.getlist(name)) > 1 for name in ("authorization", "content-type")):
            return REPEATED_HEADER
        return None

    def form_endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
        """An RFC 6749-style form endpoint served by ``OAuthService.<name>`` (introspect, revoke)."""

        async def endpoint(request: Request) -> Response:
            body = await _limited_body(request, MAX_BODY_BYTES)
            if body is None:
                return _reply_response(TOO_LARGE)
            problem = _header_problem(request)
            if problem is not None:
                return _reply_response(problem)
            headers = request.headers
            handler: Callable[[bytes, str | None, str | None, str], Awaitable[Reply]] = getattr(c.oauth, name)
            reply = await handler(body, headers.get("content-type"), headers.get("authorization"), _client_ip(request))
            return _reply_response(reply)

        return endpoint

    async def revocations(request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
            wait = float(request.query_params.get("wait", "0"))
            if since < 0 or not math.isfinite(wait):
                raise ValueError
        except ValueError:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "since must be a cursor (>= 0), wait seconds"}, 400
            )
        wait = min(max(wait, 0.0), settings.feed_max_wait)
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(_sse(since), media_type="text/event-stream", headers=NO_STORE)
        events = await c.feed.wait_since(since, wait)
        cursor = events[-1].cursor if events else since
        return JSONResponse({"events": [event_json(e) for e in events], "cursor": cursor}, headers=NO_STORE)

    async def _sse(cursor: int) -> AsyncIterator[bytes]:
        yield b": credward revocation feed\n\n"
        while True:
            events = await c.feed.wait_since(cursor, settings.feed_max_wait)
            if not events:
                yield b": keep-alive\n\n"
            for event in events:
                cursor = event.cursor
                data = json.dumps(event_json(event), separators=(",", ":"))
                yield f"id: {cursor}\nevent: revocation\ndata: {data}\n\n".encode()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await c.store.ping()
            c.keyring.keyset.signer  # noqa: B018 - keys are loaded
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, 503)
        return JSONResponse({"status": "ready", "kid": c.keyring.keyset.signer.kid})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(c.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def admin_route(
        handler: Callable[[Request, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                caller = await c.admin_auth.authenticate(request.headers.get("authorization"))
            except AdminAuthError as exc:
                headers = {"WWW-Authenticate": 'Bearer realm="credward-admin"'} if exc.status_code == 401 else {}
                error = "unauthorized" if exc.status_code == 401 else "forbidden"
                return JSONResponse({"error": error, "error_description": str(exc)}, exc.status_code, headers=headers)
            client_id = request.path_params["client_id"]
            if not CLIENT_ID_RE.fullmatch(client_id):
                return JSONResponse({"error": "invalid_request", "error_description": "malformed client id"}, 400)
            try:
                response = await handler(request, client_id)
            except (BadAdminRequest, UnstorableText) as exc:  # UnstorableText: a backstop, the models reject first
                return JSONResponse({"error": "invalid_request", "error_description": str(exc)}, 400)
            except NotFound:
                return JSONResponse({"error": "not_found", "error_description": "no such account"}, 404)
            log.info("admin %s %s by %s -> %d", request.method, request.url.path, caller, response.status_code)
            return response

        return wrapped

    async def admin_body(request: Request) -> bytes:
        body = await _limited_body(request, ADMIN_MAX_BODY_BYTES)
        if body is None:
            raise BadAdminRequest("body larger than 1 MiB")
        return body

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    async def get_account(request: Request, client_id: str) -> Response:
        return JSONResponse(account_view(await c.admin.get(client_id)))

    async def put_account(request: Request, client_id: str) -> Response:
        account, created = await c.admin.put_account(client_id, await admin_body(request), now())
        return JSONResponse(account_view(account), 201 if created else 200)

    async def put_roles(request: Request, client_id: str) -> Response:
        return JSONResponse(account_view(await c.admin.set_role_mappings(client_id, await admin_body(request))))

    async def revoke_account(request: Request, client_id: str) -> Response:
        event = await c.admin.revoke(client_id, now())
        return JSONResponse(event_json(event))

    async def delete_account(request: Request, client_id: str) -> Response:
        await c.admin.delete(client_id)
        return Response(status_code=204)

    async def reload_keys_forever() -> None:
        while True:
            await asyncio.sleep(settings.key_reload_interval)
            try:
                c.keyring.reload_if_changed()
            except Exception:
                log.exception("key reload failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await c.store.migrate()
        task = asyncio.create_task(reload_keys_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            c.oauth.audit.flush()
            await c.admin_auth.close()
            await c.store.close()

    account_path = "/v1/admin/accounts/{client_id}"
    routes = [
        Route("/.well-known/openid-configuration", well_known, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", well_known, methods=["GET"]),
        Route("/jwks.json", jwks, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/oauth2/introspect", form_endpoint("introspect"), methods=["POST"]),
        Route("/oauth2/revoke", form_endpoint("revoke"), methods=["POST"]),
        Route("/v1/revocations", revocations, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(account_path, admin_route(get_account), methods=["GET"]),
        Route(account_path, admin_route(put_account), methods=["PUT"]),
        Route(account_path, admin_route(delete_account), methods=["DELETE"]),
        Route(account_path + "/role-mappings", admin_route(put_roles), methods=["PUT"]),
        Route(account_path + "/revoke", admin_route(revoke_account), methods=["POST"]),
        # Only POST is served by the fast path; other methods get Starlette's 405.
        Route(TOKEN_PATH, healthz, methods=["POST"]),
    ]
    starlette = Starlette(routes=routes, lifespan=lifespan)
    app = CredwardApp(c, starlette)
    starlette.state.components = c
    return app

"""credward's own HTTP/1.1 server: the token endpoint natively, every other path through the ASGI app.

Why: on uvicorn a do-nothing request cost about as much CPU as an ES256
signature, so the server alone capped tokens per core near 0.3 x the raw sign
rate. Here ``POST /oauth2/token`` goes from bytes to bytes: httptools parses
the request, :meth:`OAuthService.token_now` answers it without awaiting when
the client's account is cached, and the response (precomputed header block,
body) leaves in one ``transport.write``. No ASGI scope, no task, no message
dicts. Everything else (discovery, JWKS, admin API, revocation feed, and token
requests whose account must first be loaded) runs the ordinary ASGI app through
a small adapter, so Starlette still owns routing, bodies and streaming there.

What it does as an HTTP/1.1 server (tested over real sockets in
``tests/integration/security/test_httpserver.py``):

- keep-alive, and pipelining: requests on one connection are answered strictly
  in order; while a slow (awaiting) request runs, later ones wait in a bounded
  queue and reading pauses when it is full;
- ``Content-Length`` and chunked request bodies (httptools decodes chunks);
  ``Expect: 100-continue`` answered before the body is read (only at the head
  of the line, so a pipelined interim response can never overtake an answer);
- HTTP/1.0 (answered, then closed) and ``Connection: close``;
- limits: request line + headers (431), number of headers (431), body
  (413, or the token endpoint's own RFC 6749 ``invalid_request`` for bodies
  over its 16 KiB that still fit the server limit);
- time limits: a request must arrive whole within ``request_timeout`` from its
  first byte (slowloris), an idle keep-alive connection is closed after
  ``keep_alive_timeout``; one sweep per second checks every connection;
- repeated ``Authorization`` or ``Content-Type`` on the token endpoint:
  ``invalid_request``, never a token (the ASGI app applies the same rule to the
  other OAuth endpoints);
- errors: parse errors get a plain 400 and the connection closes; an exception
  in the app is logged and answered 500 without details;
- SIGTERM/SIGINT: stop accepting, finish the responses in flight (up to
  ``shutdown_timeout``), tell streaming responses the client left, then run
  the ASGI lifespan shutdown (which flushes the audit log and closes the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

from credward.domain.oauth import MAX_BODY_BYTES
from credward.security.service import NeedAccount, OAuthService, Reply

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

TOKEN_PATH = b"/oauth2/token"
HEALTHZ_PATH = b"/healthz"


@dataclass(frozen=True, slots=True)
class Limits:
    max_head_bytes: int = 16 * 1024  # request line and headers together
    max_headers: int = 100
    max_body_bytes: int = 2 * 1024 * 1024  # the admin API takes up to 1 MiB; the token endpoint 16 KiB
    request_timeout: float = 10.0  # first byte of a request to its last
    keep_alive_timeout: float = 5.0  # idle between requests
    shutdown_timeout: float = 10.0
    max_pipelined: int = 32  # parsed requests waiting behind a slow one before reading pauses
    max_pipelined_bytes: int = 256 * 1024  # or their bodies together: bounds what one connection can make us hold


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Date:
    """The ``Date`` header line, rebuilt at most once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.line = b""
        self.refresh()

    def refresh(self) -> None:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"


DATE = _Date()
_HEAD_BLOCKS: dict[tuple[int, tuple[tuple[bytes, bytes], ...]], bytes] = {}


def _head_block(status: int, headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """Status line and the fixed headers of a reply, built once per distinct (status, headers)."""
    key = (status, headers)
    block = _HEAD_BLOCKS.get(key)
    if block is None:
        block = STATUS_LINES[status] + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        if len(_HEAD_BLOCKS) < 256:  # replies carry a few fixed header sets (Retry-After values vary)
            _HEAD_BLOCKS[key] = block
    return block


def render_reply(reply: Reply, keep_alive: bool) -> bytes:
    return b"".join(
        (
            _head_block(reply.status, reply.headers),
            DATE.line,
            b"content-length: ",
            str(len(reply.body)).encode(),
            b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n",
            reply.body,
        )
    )


def plain_error(status: int, text: str) -> bytes:
    """A small text/plain error that closes the connection (framing problems: nothing after it can be trusted)."""
    body = text.encode()
    return (
        STATUS_LINES[status] + DATE.line + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


HEALTHY = Reply(200, b'{"status":"ok"}', ((b"content-type", b"application/json"),))
_ERROR_500 = Reply(500, b'{"error":"server_error"}', ((b"content-type", b"application/json"),))


class _Request:
    __slots__ = (
        "authorization",
        "body",
        "content_length",
        "content_type",
        "expect",
        "headers",
        "keep_alive",
        "method",
        "native",
        "repeated",
        "size",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.native = False  # POST /oauth2/token or GET /healthz: served without the ASGI app
        self.repeated = False  # Authorization or Content-Type more than once
        self.authorization: bytes | None = None
        self.content_type: bytes | None = None
        self.content_length: bytes | None = None
        self.expect: bytes | None = None


class HeadTooLarge(Exception):
    """Request line or headers over the limits (431)."""


class BodyTooLarge(Exception):
    """A body over the server's limit (413)."""


class _State:
    """What every connection shares: the app, the OAuth service, limits, open connections."""

    def __init__(self, app: ASGIApp, oauth: OAuthService, limits: Limits) -> None:
        self.app = app
        self.oauth = oauth
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.shutting_down = False


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.limits = state.limits
        self.oauth = state.oauth
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.ip = "unknown"
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.request: _Request | None = None  # being received
        self.head_bytes = 0
        self.in_head = False
        self.queue: deque[_Request] = deque()  # received whole, waiting behind a running one
        self.queued_bytes = 0
        self.busy = False  # an awaiting request is running; answers must wait for it
        self.closing = False  # answer what is queued, then close
        self.paused = False
        self.deadline = 0.0  # when to give up on this connection (see sweep)
        self.disconnected: asyncio.Future[None] = self.loop.create_future()

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
            self.ip = self.client[0]
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple) and len(sock) >= 2:
            self.server = (str(sock[0]), int(sock[1]))
        self.state.connections.add(self)
        self.deadline = self.loop.time() + self.limits.keep_alive_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.closing = True
        self.queue.clear()
        self.queued_bytes = 0
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _fail(self, status: int, text: str) -> None:
        """A framing error: answer it (if no answer is pending ahead of it) and close."""
        if self.transport is not None and not self.transport.is_closing() and not self.busy and not self.queue:
            self.transport.write(plain_error(status, text))
        self._close()

    def check_deadline(self, now: float) -> None:
        """Called by the sweep: time out a slow request (408) or an idle keep-alive connection."""
        if self.busy or self.deadline > now or self.closing:
            return
        if self.in_head or self.request is not None:
            log.debug("closing %s: request not received within %ss", self.ip, self.limits.request_timeout)
            self._fail(408, "request timeout")
        else:
            self._close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._fail(431, str(exc.__context__))
            elif isinstance(exc.__context__, BodyTooLarge):
                self._fail(413, "request body too large")
            else:
                log.exception("HTTP parser callback failed")
                self._fail(400, "bad request")
            return
        except httptools.HttpParserUpgrade:
            self.closing = True  # no protocol upgrades: answer what arrived, then close
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")
            return
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_head_bytes:
                self._fail(431, "request header fields too large")
        if self.closing and not self.busy and not self.queue:
            self._close()

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.in_head = True
        self.head_bytes = 0
        self.deadline = self.loop.time() + self.limits.request_timeout

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.url += url
        if len(request.url) > self.limits.max_head_bytes:
            raise HeadTooLarge("request URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        headers = request.headers
        name = name.lower()
        if name == b"authorization":
            request.repeated |= request.authorization is not None
            request.authorization = value
        elif name == b"content-type":
            request.repeated |= request.content_type is not None
            request.content_type = value
        elif name == b"content-length":
            request.content_length = value
        elif name == b"expect":
            request.expect = value
        headers.append((name, value))
        request.size += len(name) + len(value) + 4
        if len(headers) > self.limits.max_headers:
            raise HeadTooLarge("too many header fields")
        if request.size + len(request.url) > self.limits.max_head_bytes:
            raise HeadTooLarge("request header fields too large")

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        self.in_head = False
        parser = self.parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = request.version == "1.1" and parser.should_keep_alive()
        request.size = 0
        request.native = (request.url == TOKEN_PATH and request.method == b"POST") or (
            request.url == HEALTHZ_PATH and request.method == b"GET"
        )
        if request.content_length is not None and int(request.content_length) > self.limits.max_body_bytes:
            raise BodyTooLarge  # (llhttp has already refused a malformed Content-Length)
        expect = request.expect
        at_head_of_line = not self.busy and not self.queue and self.transport is not None
        if expect is not None and expect.lower() == b"100-continue" and at_head_of_line:
            assert self.transport is not None
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.size += len(body)
        if request.size > self.limits.max_body_bytes:
            raise BodyTooLarge
        if not (request.native and request.size > MAX_BODY_BYTES):  # over the token limit: count, do not keep
            request.body.append(body)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        self.request = None
        if self.closing:  # after a request that closes the connection: nothing more is answered
            return
        if not request.keep_alive:
            self.closing = True
        if self.busy or self.queue:
            self.queue.append(request)
            self.queued_bytes += request.size
            full = len(self.queue) >= self.limits.max_pipelined or self.queued_bytes > self.limits.max_pipelined_bytes
            if full and not self.paused and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
            return
        self._dispatch(request)

    # -- answering --------------------------------------------------------------------------------

    def _dispatch(self, request: _Request) -> None:
        """Answer now if possible; otherwise start the awaiting path and hold later requests back."""
        if request.native:
            reply = self._native(request)
            if reply is not None:
                self._write_reply(reply, request.keep_alive)
                return
        self.busy = True
        self.loop.create_task(self._run_async(request))

    def _native(self, request: _Request) -> Reply | None:
        if request.method == b"GET":
            return HEALTHY
        if request.size > MAX_BODY_BYTES:
            return TOO_LARGE
        if request.repeated:
            return REPEATED_HEADER
        body = request.body[0] if len(request.body) == 1 else b"".join(request.body)
        reply = self.oauth.token_now(body, _text(request.content_type), _text(request.authorization), self.ip)
        return None if isinstance(reply, NeedAccount) else reply

    def _write_reply(self, reply: Reply, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not (self.closing and not self.queue)
        transport.write(render_reply(reply, keep_alive))
        self._after_response(keep_alive)

    def _after_response(self, keep_alive: bool) -> None:
        if not keep_alive or (self.closing and not self.queue):
            self.queue.clear()
            self.queued_bytes = 0
            self._close()
            return
        if self.request is None and not self.in_head:
            self.deadline = self.loop.time() + self.limits.keep_alive_timeout

    async def _run_async(self, request: _Request) -> None:
        try:
            if request.native and request.method == b"POST":
                reply = await self._token_async(request)
                self._write_reply(reply, request.keep_alive)
            else:
                self._after_response(await self._asgi(request))
        except Exception:
            log.exception("request failed")
            self._close()
        finally:
            self.busy = False
        self._drain()

    async def _token_async(self, request: _Request) -> Reply:
        body = b"".join(request.body)
        return await self.oauth.token(body, _text(request.content_type), _text(request.authorization), self.ip)

    def _drain(self) -> None:
        """Answer the requests that waited behind a slow one, in order, until the next slow one."""
        while self.queue and not self.busy:
            if self.transport is None or self.transport.is_closing():
                self.queue.clear()
                self.queued_bytes = 0
                return
            request = self.queue.popleft()
            self.queued_bytes -= request.size
            self._dispatch(request)
        limits = self.limits
        drained = len(self.queue) < limits.max_pipelined // 2 and self.queued_bytes <= limits.max_pipelined_bytes // 2
        if self.paused and drained and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        if self.closing and not self.busy and not self.queue:
            self._close()

    # -- the ASGI adapter ------------------------------------------------------------------------

    async def _asgi(self, request: _Request) -> bool:
        """Run the ASGI app for one request; whether the connection may be kept open."""
        parsed = httptools.parse_url(request.url)
        raw_path = parsed.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.version,
            "method": request.method.decode("latin-1"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.server,
            "state": {},
        }
        body = b"".join(request.body)
        received = False
        head_request = request.method == b"HEAD"
        keep_alive = request.keep_alive and not (self.closing and not self.queue)
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        started = chunked = finished = False
        transport = self.transport
        assert transport is not None

        async def receive() -> Message:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.disconnected
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, response_headers, started, chunked, finished, keep_alive
            if finished or transport.is_closing():
                return
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                response_headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                return
            if kind != "http.response.body":
                return
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            no_body = head_request or status in (204, 304) or status < 200
            if not started:
                started = True
                has_length = any(k == b"content-length" for k, _ in response_headers)
                extra: list[bytes] = []
                if not has_length and not no_body:
                    if more:
                        if request.version == "1.1":
                            chunked = True
                            extra.append(b"transfer-encoding: chunked\r\n")
                        else:
                            keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
                    else:
                        extra.append(b"content-length: " + str(len(chunk)).encode() + b"\r\n")
                if not keep_alive:
                    extra.append(b"connection: close\r\n")
                head = [STATUS_LINES.get(status, _status_line(status)), DATE.line]
                head += [k + b": " + v + b"\r\n" for k, v in response_headers if k not in (b"connection", b"date")]
                head += extra
                head.append(b"\r\n")
                if not no_body and chunk:
                    head.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if not no_body and chunked and not more:
                    head.append(b"0\r\n\r\n")
                transport.write(b"".join(head))
            elif not no_body:
                if chunked:
                    if chunk:
                        transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    if not more:
                        transport.write(b"0\r\n\r\n")
                elif chunk:
                    transport.write(chunk)
            if not more:
                finished = True

        try:
            await self.state.app(scope, receive, send)
        except Exception:
            log.exception("ASGI application failed on %s %s", scope["method"], path)
            if not started:
                transport.write(render_reply(_ERROR_500, False))
            return False
        if not finished:
            if not started:
                log.error("ASGI application returned without a response on %s %s", scope["method"], path)
                transport.write(render_reply(_ERROR_500, False))
            return False
        return keep_alive


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


# Built once; the same bodies the ASGI app gives (credward.security.app).
def _error(description: str) -> Reply:
    from credward.errors import InvalidRequest
    from credward.security.service import error_reply

    return error_reply(InvalidRequest(description))


TOO_LARGE = _error("the request body is too large")
REPEATED_HEADER = _error("the Authorization and Content-Type headers must not be repeated")


# -- lifespan and serving ---------------------------------------------------------------------------


class Lifespan:
    """Drives an ASGI app's lifespan protocol: startup before serving, shutdown after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async def receive() -> Message:
            return await self._inbox.get()

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                self._started.set_result(None)
            elif kind == "lifespan.startup.failed":
                self._started.set_exception(RuntimeError(message.get("message", "startup failed")))
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed") and not self._stopped.done():
                self._stopped.set_result(None)

        try:
            await self.app(
                {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}, receive, send
            )
        except Exception as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.exception("lifespan failed")
        finally:
            if not self._stopped.done():
                self._stopped.set_result(None)

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped
        if self._task is not None:
            await self._task


async def serve(
    app: ASGIApp,
    oauth: OAuthService,
    host: str,
    port: int,
    limits: Limits = Limits(),
    stop: asyncio.Event | None = None,
    ready: Callable[[asyncio.Server], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    loop = asyncio.get_running_loop()
    state = _State(app, oauth, limits)
    stop = stop or asyncio.Event()
    lifespan = Lifespan(app)
    await lifespan.startup()
    handlers = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handlers.append(sig)
    server = await loop.create_server(lambda: HttpProtocol(state), host, port, backlog=2048, reuse_address=True)
    if ready is not None:
        ready(server)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(1.0)
            DATE.refresh()
            now = loop.time()
            for conn in list(state.connections):
                conn.check_deadline(now)

    sweeper = asyncio.create_task(sweep())
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing %d connection(s)", len(state.connections))
        state.shutting_down = True
        server.close()
        for conn in list(state.connections):
            conn.closing = True
            if not conn.busy and not conn.queue:
                conn._close()
        deadline = loop.time() + limits.shutdown_timeout
        told = False
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
            if not told and loop.time() > deadline - limits.shutdown_timeout + 1:
                told = True  # a response still running after a second streams: tell the app the client is gone
                for conn in list(state.connections):
                    if not conn.disconnected.done():
                        conn.disconnected.set_result(None)
        for conn in list(state.connections):
            conn._close()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        for sig in handlers:
            loop.remove_signal_handler(sig)
        await server.wait_closed()
        await lifespan.shutdown()

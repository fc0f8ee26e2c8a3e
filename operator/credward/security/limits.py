"""The request limits the HTTP server leaves to the application, as one ASGI layer around it.

granian (hyper) parses HTTP/1.1, times out slow request heads, refuses oversized
heads (431) and caps open connections; it does not check ``Host``, cap the
header count below its own 100, limit or time out request bodies, or shed load.
:class:`LimitedApp` does those, before the application sees a request:

* ``Host`` missing or empty (HTTP/1.1), or repeated: 400 (RFC 9112 §3.2; an http URI
  has no empty host, RFC 9110 §4.2.1).
* more than ``max_headers`` header fields: 431.
* a ``Content-Length`` over ``max_body_bytes``: 413 at once, nothing read; a
  chunked body is cut with 413 as soon as it passes the limit, so no more than
  the limit is ever held for a request, authenticated or not.
* a body that has not fully arrived ``body_timeout`` after the app first asked
  for it: 408.
* an encoded slash (``%2F``) in the path: 404. Servers decode it into
  ``scope["path"]``, which would route ``/oauth2%2Ftoken`` as the token endpoint.
* more than ``max_concurrency`` requests inside the app: 503 with ``Retry-After``.
  The revocation feed is exempt (its requests wait, they do not work); open
  connections, feed subscribers included, are capped by the server.

Each refusal closes the connection (``Connection: close``). On shutdown,
:meth:`LimitedApp.stop` ends open streams (the app sees ``http.disconnect``) so
the server's graceful shutdown only waits for requests that are doing work, and
cancels those still running after the grace period, so the ASGI lifespan
(which flushes the audit log and closes the store) always runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNCAPPED_PATHS = frozenset({"/v1/revocations"})
DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_headers: int = 64
    max_body_bytes: int = 1024 * 1024
    body_timeout: float = 10.0
    max_concurrency: int = 256


def _refusal(status: int, error: str, description: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": error, "error_description": description}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    return status, headers, body


BAD_HOST = _refusal(400, "invalid_request", "exactly one Host header is required")
TOO_MANY_HEADERS = _refusal(431, "invalid_request", "too many header fields")
BAD_LENGTH = _refusal(400, "invalid_request", "malformed Content-Length")
TOO_LARGE = _refusal(413, "invalid_request", "the request body is too large")
TOO_SLOW = _refusal(408, "invalid_request", "the request body did not arrive in time")
ENCODED_SLASH = _refusal(404, "not_found", "no such endpoint")
BUSY = _refusal(503, "temporarily_unavailable", "too many requests in progress; retry shortly")
STOPPING = _refusal(503, "temporarily_unavailable", "the service is stopping; retry")


async def _answer(send: Send, refusal: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = refusal
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _precheck(scope: Scope, limits: HttpLimits) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    """A refusal for what the request head alone shows, or None."""
    headers = scope["headers"]
    if len(headers) > limits.max_headers:
        return TOO_MANY_HEADERS
    hosts: list[bytes] = []
    length: bytes | None = None
    for name, value in headers:
        if name == b"host":
            hosts.append(value)
        elif name == b"content-length":
            length = value
    # granian inserts an empty Host when the request has none; HTTP/1.0 ("1", "1.0") may omit it.
    if len(hosts) > 1 or (scope.get("http_version") not in ("1", "1.0") and not (hosts and hosts[0])):
        return BAD_HOST
    if length is not None:
        if not length.isdigit():
            return BAD_LENGTH
        if int(length) > limits.max_body_bytes:
            return TOO_LARGE
    raw_path = scope.get("raw_path")
    if raw_path is not None and b"%2f" in raw_path.split(b"?", 1)[0].lower():
        return ENCODED_SLASH
    return None


class LimitedApp:
    """ASGI middleware enforcing :class:`HttpLimits` (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits
        self.active = 0
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.forced = False  # the grace period is over: requests are being cancelled
        # Requests waiting for body bytes, with their deadlines; one sweeper enforces them all, which costs a
        # request a dict entry instead of a timer of its own.
        self.reading: dict[_Request, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(0.25, self.limits.body_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            self._expire_due(loop.time())

    def _expire_due(self, now: float) -> None:
        # A function of its own, so that no reference to a request outlives it: granian keeps a connection (and
        # its unread body) for as long as anything holds the request's receive callable.
        for request in [request for request, deadline in self.reading.items() if deadline <= now]:
            request.expire()

    def stop(self, grace: float) -> None:
        """End open streams now, and cancel whatever request is still in the app after ``grace`` seconds.

        Streams (every request that has read its whole body) receive ``http.disconnect``; the server's
        graceful shutdown then waits only for requests doing work, and at most ``grace`` for those.
        """
        self._stopping.set()
        asyncio.get_running_loop().call_later(grace, self._cancel_all)

    def _cancel_all(self) -> None:
        self.forced = True
        for task in list(self._tasks):
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _precheck(scope, self.limits)
        if refusal is not None:
            await _answer(send, refusal)
            return
        capped = scope["path"] not in UNCAPPED_PATHS
        if capped:
            if self.active >= self.limits.max_concurrency:
                await _answer(send, BUSY)
                return
            self.active += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            await _Request(self, task, receive, send).run(scope)
        finally:
            if capped:
                self.active -= 1
            if task is not None:
                self._tasks.discard(task)


class _Request:
    """One request's body accounting; once the layer has answered, the app's own sends are dropped."""

    __slots__ = (
        "_deadline",
        "_done",
        "_layer",
        "_receive",
        "_received",
        "_send",
        "_started",
        "_task",
        "_timed_out",
        "answered",
    )

    def __init__(self, layer: LimitedApp, task: asyncio.Task[Any] | None, receive: Receive, send: Send) -> None:
        self._layer = layer
        self._task = task
        self._receive = receive
        self._send = send
        self._received = 0
        self._deadline: float | None = None
        self._done = False
        self._started = False
        self._timed_out = False
        self.answered = False

    def expire(self) -> None:
        """The body deadline passed while waiting for it: interrupt that wait (see :meth:`receive`)."""
        if not self._timed_out and self._task is not None:
            self._timed_out = True
            self._task.cancel()

    async def run(self, scope: Scope) -> None:
        try:
            await self._layer.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            task = self._task
            if not self._layer.forced or task is None:
                raise
            task.uncancel()  # cancelled by this layer when the shutdown grace period ended: answer if possible
            if not self._started and not self.answered:
                await _answer(self._send, STOPPING)
        except Exception:
            if not self.answered:
                raise
            # The app failed on the disconnect this layer gave it after refusing the request: nothing to report.

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)

    async def receive(self) -> Message:
        if self.answered:
            return DISCONNECT
        if self._done:
            return await self._after_body()
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self._layer.limits.body_timeout
        if self._task is None:  # not run as a task of its own: a timer of its own
            try:
                async with asyncio.timeout_at(self._deadline):
                    message = await self._receive()
            except TimeoutError:
                return await self._refuse(TOO_SLOW)
        else:
            reading = self._layer.reading
            reading[self] = self._deadline
            try:
                message = await self._receive()
            except asyncio.CancelledError:
                if not self._timed_out:
                    raise
                self._task.uncancel()
                return await self._refuse(TOO_SLOW)
            finally:
                reading.pop(self, None)
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._layer.limits.max_body_bytes:
                return await self._refuse(TOO_LARGE)
            self._done = not message.get("more_body", False)
        return message

    async def _refuse(self, refusal: tuple[int, list[tuple[bytes, bytes]], bytes]) -> Message:
        if not self._started:
            await _answer(self._send, refusal)
        self.answered = True
        return DISCONNECT

    async def _after_body(self) -> Message:
        """The next event after the body (a disconnect), or a disconnect of our own when the service stops."""
        stopping = self._layer._stopping
        if stopping.is_set():
            return DISCONNECT
        pending = asyncio.ensure_future(self._receive())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((pending, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not pending.done():
                pending.cancel()
        return pending.result() if pending.done() and not pending.cancelled() else DISCONNECT

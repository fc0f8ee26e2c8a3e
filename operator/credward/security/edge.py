"""The one edge where the security service meets HTTP: credward's errors become answers here, and only here.

Services raise credward's exceptions (:mod:`credward.errors`) and return domain values; endpoints turn
values into a :class:`Reply`; :func:`error_reply` turns every exception into one, the way httpx's
``map_exceptions`` sorts transport errors at its edge. So an error's status, headers and body are decided
in one place, and every ``error_description`` passes :func:`describe` (RFC 6749 §5.2's character set), so
no client input is echoed in a form a client cannot parse.

Also here, written once: the rule for repeated ``Authorization``/``Content-Type`` headers and the bounded
body read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from credward.errors import (
    AdminAuthError,
    AuthError,
    BodyTooLarge,
    CredwardError,
    InvalidRequest,
    ServiceError,
    Throttled,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
)
MAX_DESCRIPTION = 300


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole HTTP answer: status, body, headers (``content-length`` is added when sent)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = field(default=JSON_HEADERS)


def json_reply(status: int, payload: Any, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), JSON_HEADERS + extra)


def _allowed(char: str) -> bool:
    """RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (printable ASCII but ``"`` and ``\\``)."""
    return " " <= char <= "~" and char not in '"\\'


def describe(text: str) -> str:
    """``text`` fit for ``error_description``: any other character becomes ``?``, and it is kept short."""
    cleaned = "".join(c if _allowed(c) else "?" for c in text)
    return cleaned if len(cleaned) <= MAX_DESCRIPTION else cleaned[: MAX_DESCRIPTION - 3] + "..."


UNAVAILABLE = json_reply(
    503, {"error": "temporarily_unavailable", "error_description": "the service cannot answer right now"}
)


def error_reply(exc: BaseException) -> Reply:
    """The HTTP answer to any exception an endpoint raised; unexpected ones are logged and become a 503."""
    if isinstance(exc, AuthError):
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if exc.status_code == 401:
            extra = ((b"www-authenticate", b'Basic realm="credward", error="invalid_client"'),)
        elif isinstance(exc, Throttled):
            extra = ((b"retry-after", str(exc.retry_after).encode()),)
        return json_reply(exc.status_code, {"error": exc.error, "error_description": describe(exc.description)}, extra)
    if isinstance(exc, AdminAuthError):
        if exc.status_code == 401:
            challenge = ((b"www-authenticate", b'Bearer realm="credward-admin"'),)
            return json_reply(401, {"error": "unauthorized", "error_description": describe(str(exc))}, challenge)
        return json_reply(exc.status_code, {"error": "forbidden", "error_description": describe(str(exc))})
    if isinstance(exc, ServiceError):
        return json_reply(exc.status_code, {"error": exc.error, "error_description": describe(str(exc))})
    if isinstance(exc, CredwardError):
        log.error("request failed: %s: %s", type(exc).__name__, exc)
    else:
        log.error("request failed", exc_info=exc)
    return UNAVAILABLE


def oauth_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """``(content-type, authorization)`` of an OAuth request; either one repeated is ``invalid_request``.

    Which of two such headers counts differs between HTTP stacks (first or last), so a request that
    carries either twice is refused outright, never answered on a guess.
    """
    content_type = authorization = None
    repeated = False
    for name, value in headers:
        if name == b"content-type":
            repeated |= content_type is not None
            content_type = value
        elif name == b"authorization":
            repeated |= authorization is not None
            authorization = value
    if repeated:
        raise InvalidRequest("the Authorization and Content-Type headers must not be repeated")
    return content_type, authorization


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or :class:`BodyTooLarge` as soon as it exceeds ``limit`` (never read further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("the request body did not arrive")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})

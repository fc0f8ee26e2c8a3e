"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers in one ``write`` and its
body in another: two syscalls and two TCP segments per token. Here the
connection's transport is wrapped so that every write made during one event
loop iteration goes out as a single write at the end of it. Measured on the
token endpoint (one pinned worker, wrk, same machine, alternating runs): about
17% more tokens per CPU-second. Streaming responses (server-sent events) still
flush every iteration, so nothing is held back.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """Delegates to a transport, but joins the writes of one loop iteration into one."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        super().connection_made(transport)
        # Request cycles write through self.transport (duck-typed); flow control keeps the real one.
        self.transport = cast(asyncio.Transport, CorkedTransport(transport, asyncio.get_running_loop()))

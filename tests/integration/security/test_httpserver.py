"""credward's HTTP/1.1 server over real sockets: framing, keep-alive, pipelining, limits, timeouts, shutdown.

The server runs in-process on its own uvloop thread with short limits, in front
of the real app and a real SQLite store; requests are raw bytes on a socket, so
what is tested is what a client sees on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
from tests.integration.security.conftest import StartService

from credward.domain.secrets import hash_secret, new_client_id, new_client_secret
from credward.security import httpserver
from credward.security.adminauth import BearerFileAuthenticator
from credward.security.app import create_app
from credward.security.service import OAuthService
from credward.security.settings import AdminAuthMode, Settings
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "t" * 40
HASH_KEY = b"k" * 64
LIMITS = httpserver.Limits(
    max_head_bytes=4096, max_headers=20, max_body_bytes=64 * 1024, request_timeout=1.0, keep_alive_timeout=1.5
)
FORM = b"application/x-www-form-urlencoded"


@dataclass
class Running:
    port: int
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread
    auth: bytes  # a valid Basic Authorization value

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=15)


def start(tmp_path: Path, app: Any = None, oauth: OAuthService | None = None) -> Running:
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN)
    settings = Settings(
        issuer="http://127.0.0.1:9000",
        store_url=f"sqlite:///{tmp_path / 'store.db'}",
        hash_key_file=tmp_path / "hash.key",
        keys_dir=tmp_path / "keys",
        admin_auth=AdminAuthMode.BEARER_FILE,
        admin_token_file=tmp_path / "admin-token",
        dev_mode=True,
    )
    loop = uvloop.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            credward = create_app(
                settings,
                SQLiteStore(tmp_path / "store.db"),
                BearerFileAuthenticator(tmp_path / "admin-token"),
                HASH_KEY,
            )
            holder["stop"] = stop = asyncio.Event()

            def on_ready(server: asyncio.Server) -> None:
                holder["port"] = server.sockets[0].getsockname()[1]
                ready.set()

            await httpserver.serve(
                app or credward, oauth or credward.components.oauth, "127.0.0.1", 0, LIMITS, stop, on_ready
            )

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by the fixture
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(15), "server did not start"
    if "error" in holder:
        raise holder["error"]
    running = Running(holder["port"], loop, holder["stop"], thread, b"")
    if app is None:
        running.auth = register(running)
    return running


def register(running: Running) -> bytes:
    client_id, secret = new_client_id(), new_client_secret()
    body = json.dumps(
        {
            "displayName": "t",
            "audiences": ["https://a.example"],
            "secrets": [{"id": "s1", "hash": hash_secret(HASH_KEY, secret)}],
        }
    ).encode()
    sock = running.connect()
    sock.sendall(
        b"PUT /v1/admin/accounts/" + client_id.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + ADMIN_TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    status, _, _ = read_response(sock)
    assert status == 201
    sock.close()
    return b"Basic " + base64.b64encode(f"{client_id}:{secret}".encode())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path)
    yield running
    running.shutdown()


def token_request(auth: bytes, extra: bytes = b"", body: bytes = b"grant_type=client_credentials") -> bytes:
    return (
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Authorization: " + auth + b"\r\n" + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class Reader:
    """Reads HTTP/1.1 responses off a socket (Content-Length or chunked bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def read(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    self._fill()
                size_line, self.buffer = self.buffer.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(self.buffer) < size + 2:
                    self._fill()
                body, self.buffer = body + self.buffer[:size], self.buffer[size + 2 :]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    return Reader(sock).read()


def test_keep_alive_serves_many_requests_on_one_connection(server: Running) -> None:
    sock = server.connect()
    reader = Reader(sock)
    for _ in range(3):
        sock.sendall(token_request(server.auth))
        status, headers, body = reader.read()
        assert status == 200, body
        assert "access_token" in json.loads(body)
        assert headers["cache-control"] == "no-store"
        assert "date" in headers
        assert "connection" not in headers
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.read()[0] == 200


def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    """Native and ASGI-served requests in one write: answers keep the order of the requests."""
    sock = server.connect()
    batch = (
        token_request(server.auth)
        + b"GET /jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
        + token_request(b"Basic Ym9ndXM6Ym9ndXM=")
        + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        + token_request(server.auth)
    )
    sock.sendall(batch)
    reader = Reader(sock)
    answers = [reader.read() for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 401, 200, 200]
    assert b"access_token" in answers[0][2]
    assert b"keys" in answers[1][2]
    assert json.loads(answers[2][2])["error"] == "invalid_client"
    assert b"ready" in answers[3][2]
    assert b"access_token" in answers[4][2]


def test_chunked_request_body(server: Running) -> None:
    sock = server.connect()
    sock.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Authorization: " + server.auth + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\ngrant_type\r\n13\r\n=client_credentials\r\n0\r\n\r\n"
    )
    status, _, body = read_response(sock)
    assert status == 200, body


def test_connection_close_and_http_1_0(server: Running) -> None:
    sock = server.connect()
    sock.sendall(token_request(server.auth, b"Connection: close\r\n"))
    reader = Reader(sock)
    status, headers, _ = reader.read()
    assert status == 200
    assert headers["connection"] == "close"
    assert reader.closed()
    sock = server.connect()
    sock.sendall(b"GET /jwks.json HTTP/1.0\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    status, headers, body = reader.read()
    assert status == 200
    assert b"keys" in body
    assert reader.closed()


def test_expect_100_continue(server: Running) -> None:
    sock = server.connect()
    body = b"grant_type=client_credentials"
    head = token_request(server.auth, b"Expect: 100-continue\r\n", body)[: -len(body)]
    sock.sendall(head)
    interim = sock.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    status, _, answer = read_response(sock)
    assert status == 200, answer


def test_body_limits(server: Running) -> None:
    sock = server.connect()
    sock.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
    )
    reader = Reader(sock)
    status, headers, _ = reader.read()
    assert status == 413
    assert headers["connection"] == "close"
    assert reader.closed()
    # Over the token endpoint's 16 KiB but within the server's limit: the endpoint's own RFC 6749 error.
    sock = server.connect()
    sock.sendall(token_request(server.auth, body=b"grant_type=client_credentials&pad=" + b"x" * 20000))
    status, headers, body = read_response(sock)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    # A chunked body that grows past the limit: 413 (or a reset, if the client is still sending after it).
    sock = server.connect()
    sock.sendall(b"POST /oauth2/introspect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    try:
        for _ in range(3):
            sock.sendall(chunk)
        assert Reader(sock).read()[0] == 413
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_header_limits(server: Running) -> None:
    sock = server.connect()
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(50))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    reader = Reader(sock)
    assert reader.read()[0] == 431
    assert reader.closed()
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    assert read_response(sock)[0] == 431
    sock = server.connect()  # a header that never ends, sent in pieces: refused once over the limit
    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: ")
    refused = False
    try:
        for _ in range(100):
            sock.sendall(b"a" * 1000)
            time.sleep(0.005)
    except (ConnectionResetError, BrokenPipeError):
        refused = True
    assert refused or Reader(sock).read()[0] == 431


def test_malformed_requests_get_400_without_details(server: Running) -> None:
    for raw in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"):
        sock = server.connect()
        sock.sendall(raw)
        reader = Reader(sock)
        status, _, body = reader.read()
        assert status == 400
        assert b"Traceback" not in body
        assert reader.closed()


def test_repeated_authorization_header_is_invalid_request(server: Running) -> None:
    sock = server.connect()
    sock.sendall(token_request(server.auth, b"Authorization: Basic Ym9ndXM6Ym9ndXM=\r\n"))
    status, headers, body = read_response(sock)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert headers["cache-control"] == "no-store"
    assert b"access_token" not in body


def test_slow_requests_and_idle_connections_are_closed(server: Running) -> None:
    slow = server.connect()
    slow.sendall(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
    idle = server.connect()
    started = time.monotonic()
    reader = Reader(slow)
    status, _, _ = reader.read()
    assert status == 408
    assert reader.closed()
    assert Reader(idle).closed(timeout=5)
    assert time.monotonic() - started < 5


def test_streaming_responses_are_chunked(server: Running) -> None:
    sock = server.connect()
    sock.sendall(b"GET /v1/revocations?since=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    sock.settimeout(5)
    head = sock.recv(65536)
    assert re.match(rb"HTTP/1.1 200 ", head)
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"credward revocation feed" in head or b"credward revocation feed" in sock.recv(65536)
    sock.close()


def test_an_app_error_is_a_plain_500(tmp_path: Path) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raise RuntimeError("secret internals")

    running = start(tmp_path, app=broken)
    try:
        sock = running.connect()
        sock.sendall(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 500
        assert b"secret internals" not in body
        assert b"Traceback" not in body
    finally:
        running.shutdown()


def test_graceful_shutdown_closes_connections_and_runs_the_lifespan(tmp_path: Path) -> None:
    running = start(tmp_path)
    sock = running.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    assert reader.read()[0] == 200
    running.shutdown()
    assert not running.thread.is_alive()
    assert reader.closed()
    with pytest.raises(ConnectionRefusedError):
        running.connect()


def test_sigterm_stops_the_service_cleanly(start_service: StartService) -> None:
    """``credward security serve`` on the default server: SIGTERM ends it with status 0, audit lines flushed."""
    service = start_service()
    client = service.register()
    assert service.token(client).status_code == 200
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=15) == 0
    assert any('"outcome":"issued"' in line for line in service.audit_lines())


def test_pipelined_bodies_behind_a_slow_request_pause_reading_and_all_get_answered(server: Running) -> None:
    """A long-poll, then bodies beyond what a connection may queue: reading pauses, then resumes, order kept."""
    sock = server.connect()
    body = b"token=" + b"x" * (60 * 1024)
    post = (
        b"POST /oauth2/introspect HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    sock.sendall(
        b"GET /v1/revocations?since=0&wait=1 HTTP/1.1\r\nHost: x\r\n\r\n" + post * 6 + token_request(server.auth)
    )
    reader = Reader(sock)
    first = reader.read()
    assert first[0] == 200
    assert json.loads(first[2])["events"] == []
    for _ in range(6):
        status, _, answer = reader.read()
        assert status == 400  # over the endpoint's 16 KiB
        assert json.loads(answer)["error"] == "invalid_request"
    status, _, answer = reader.read()
    assert status == 200
    assert b"access_token" in answer

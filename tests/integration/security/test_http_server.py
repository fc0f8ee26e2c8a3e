"""The HTTP server as shipped (``credward security serve``: granian + credward's limits layer) over raw sockets.

Each service here is the real command in a child process, started with short
limits so the tests are quick; requests are raw bytes on a socket, so what is
tested is what a client sees on the wire. A connection the server should close
must end with a clean EOF, never a reset: a crashing server fails these tests.
Memory is the server process's resident set (``VmRSS``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tests.integration.conftest import sqlite_url
from tests.integration.security.conftest import Service, StartService, stop_service
from tests.integration.security.conftest import starter as service_starter

from credward.security.store import open_store

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLACK = 3.0  # a shared, loaded machine: how late a timeout may fire
MAX_BODY = 8192  # below the token endpoint's own 16 KiB, so the server's limit is what answers
MAX_HEADERS = 20
MAX_HEAD_BYTES = 8192
LIMITS = {
    "header-timeout": f"{HEADER_TIMEOUT}s",
    "body-timeout": f"{BODY_TIMEOUT}s",
    "max-body-bytes": str(MAX_BODY),
    "max-headers": str(MAX_HEADERS),
    "max-header-bytes": str(MAX_HEAD_BYTES),
}
FEED_EVENTS = 8000
FORM = b"application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def backend_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SQLite only: the HTTP behaviour does not depend on the store (the other modules run both)."""
    return sqlite_url(tmp_path_factory.mktemp("http-store") / "store.db")


@pytest.fixture(scope="module")
def start(backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartService]:
    """Start services for the whole module (``store_url=`` picks another store); all stopped at its end."""
    started: list[Service] = []
    base = tmp_path_factory.mktemp("services")

    def start_one(store_url: str = backend_url, **flags: str) -> Service:
        return service_starter(base / str(len(started)), store_url, started)(**flags)

    try:
        yield start_one
    finally:
        for service in started:
            stop_service(service)


@pytest.fixture(scope="module")
def server(start: StartService) -> Service:
    return start(**LIMITS)


@pytest.fixture(scope="module")
def auth(server: Service) -> bytes:
    client = server.register()
    return b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())


# -- raw HTTP/1.1 on a socket -----------------------------------------------------------------


def connect(service: Service, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", int(service.base_url.rsplit(":", 1)[1])))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def token_request(auth: bytes, extra: bytes = b"", body: bytes = b"grant_type=client_credentials") -> bytes:
    return (
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM + b"\r\nAuthorization: " + auth + b"\r\n"
        + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


class Reader:
    """Reads HTTP/1.1 responses off a socket (Content-Length or chunked bodies); a reset is an error."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"closed before a whole response; got {self.buffer[:200]!r}")
        self.buffer += data

    def read(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status < 200:
            return status, headers, b""
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
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def at_eof(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the connection cleanly (nothing more was sent)."""
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(65536)
            if not data:
                return not self.buffer
            self.buffer += data


def answers(service: Service, raw: bytes, count: int) -> tuple[list[tuple[int, dict[str, str], bytes]], Reader]:
    sock = connect(service)
    sock.sendall(raw)
    reader = Reader(sock)
    return [reader.read() for _ in range(count)], reader


def rss_mib(service: Service) -> float:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def assert_serving(service: Service, auth: bytes) -> None:
    assert service.process.poll() is None, service.logs()[-2000:]
    [(status, _, body)], _ = answers(service, token_request(auth), 1)
    assert status == 200, body
    assert b"access_token" in body


# -- framing ------------------------------------------------------------------------------------


def test_keep_alive_pipelining_and_chunked_bodies_answer_in_order(server: Service, auth: bytes) -> None:
    chunked = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM + b"\r\nAuthorization: " + auth
        + b"\r\nTransfer-Encoding: chunked\r\n\r\na\r\ngrant_type\r\n13\r\n=client_credentials\r\n0\r\n\r\n"
    )  # fmt: skip
    batch = (
        token_request(auth)
        + b"GET /jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
        + token_request(b"Basic Ym9ndXM6Ym9ndXM=")
        + chunked
        + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    got, _ = answers(server, batch, 5)
    assert [status for status, _, _ in got] == [200, 200, 401, 200, 200]
    assert b"access_token" in got[0][2]
    assert b"keys" in got[1][2]
    assert json.loads(got[2][2])["error"] == "invalid_client"
    assert b"access_token" in got[3][2]
    assert b"ready" in got[4][2]
    assert got[0][1]["cache-control"] == "no-store"


def test_connection_close_and_http_1_0_close_after_the_answer(server: Service, auth: bytes) -> None:
    [(status, headers, _)], reader = answers(server, token_request(auth, b"Connection: close\r\n"), 1)
    assert status == 200
    assert headers["connection"] == "close"
    assert reader.at_eof()
    [(status, _, body)], reader = answers(server, b"GET /jwks.json HTTP/1.0\r\n\r\n", 1)  # 1.0 may omit Host
    assert status == 200
    assert b"keys" in body
    assert reader.at_eof()


def test_a_bad_request_is_answered_400_and_closed_after_the_earlier_answers(server: Service, auth: bytes) -> None:
    batch = (
        token_request(auth)
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"NOT HTTP AT ALL\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # never answered: the connection ends at the bad one
    )
    got, reader = answers(server, batch, 3)
    assert [status for status, _, _ in got] == [200, 200, 400]
    assert b"access_token" in got[0][2]
    assert b"Traceback" not in got[2][2]
    assert reader.at_eof()


def test_stray_bytes_after_a_request_do_not_cost_its_answer(server: Service, auth: bytes) -> None:
    [(status, _, body)], reader = answers(server, token_request(auth, b"Connection: close\r\n") + b"X", 1)
    assert status == 200
    assert b"access_token" in body
    assert reader.at_eof()
    client_id = str(uuid.uuid4())
    account = json.dumps({"displayName": "stray", "audiences": ["https://a.example"], "secrets": []}).encode()
    put = (
        b"PUT /v1/admin/accounts/" + client_id.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + server.admin_token.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(account)).encode() + b"\r\n\r\n" + account
    )  # fmt: skip
    got, reader = answers(server, put + b"GARBAGE\r\n\r\n", 2)
    assert [status for status, _, _ in got] == [201, 400]  # executed and answered, then the garbage refused
    assert reader.at_eof()
    with server.http() as http:
        assert http.get(f"/v1/admin/accounts/{client_id}", headers=server.admin_headers()).status_code == 200


@pytest.mark.parametrize(
    ("name", "hosts"),
    [("missing", b""), ("empty", b"Host:\r\n"), ("repeated", b"Host: x\r\nHost: y\r\n")],
)
def test_http_1_1_needs_exactly_one_host(server: Service, auth: bytes, name: str, hosts: bytes) -> None:
    raw = token_request(auth).replace(b"Host: x\r\n", hosts)
    [(status, _, body)], reader = answers(server, raw, 1)
    assert status == 400, (name, body)
    assert b"access_token" not in body
    assert reader.at_eof()


def test_an_http_2_text_request_line_is_refused_and_closed(server: Service) -> None:
    """RFC 9112 §2.3 lets a server answer an unsupported major version with 505; hyper's parser answers 400.

    Either way nothing is served on it and the connection ends (docs/http-server.md).
    """
    [(status, _, _)], reader = answers(server, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 1)
    assert status in (400, 505)
    assert reader.at_eof()


def test_100_continue_only_for_http_1_1(server: Service, auth: bytes) -> None:
    body = b"grant_type=client_credentials"
    for version, interim in ((b"1.0", False), (b"1.1", True)):
        head = token_request(auth, b"Expect: 100-continue\r\n", body)[: -len(body)].replace(
            b"HTTP/1.1", b"HTTP/" + version
        )
        sock = connect(server)
        sock.sendall(head)
        sock.settimeout(1.0)
        try:
            early = sock.recv(1024)
        except TimeoutError:
            early = b""
        assert early.startswith(b"HTTP/1.1 100 ") is interim, (version, early)  # the reason phrase is optional
        sock.sendall(body)
        reader = Reader(sock)
        reader.buffer = early.split(b"\r\n\r\n", 1)[1] if interim else early
        status, _, answer = reader.read()
        assert status == 200, (version, answer)


@pytest.mark.parametrize(
    "request_line",
    [b"GET http:// HTTP/1.1", b"GET http://[::1/x-SECRET-in-target HTTP/1.1", b"CONNECT host:443 HTTP/1.1"],
)
def test_unusable_absolute_and_authority_form_targets_get_a_4xx_and_no_traceback(
    server: Service, request_line: bytes
) -> None:
    [(status, _, body)], _ = answers(server, request_line + b"\r\nHost: host:443\r\n\r\n", 1)
    assert 400 <= status < 500, body
    assert server.process.poll() is None
    logs = server.logs()
    assert "Traceback" not in logs
    assert "SECRET-in-target" not in logs


def test_trailer_fields_are_not_request_headers(server: Service, auth: bytes) -> None:
    """A token request whose only Authorization is a chunked-body trailer is unauthenticated (RFC 9110 §6.5.1)."""
    raw = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM + b"\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: Authorization\r\n\r\n1d\r\ngrant_type=client_credentials\r\n"
        b"0\r\nAuthorization: " + auth + b"\r\n\r\n"
    )  # fmt: skip
    [(status, _, body)], _ = answers(server, raw, 1)
    assert status == 401, body
    assert b"access_token" not in body


def test_an_encoded_slash_is_not_a_path_separator(server: Service, auth: bytes) -> None:
    raw = token_request(auth).replace(b"POST /oauth2/token ", b"POST /oauth2%2Ftoken ")
    [(status, _, body)], _ = answers(server, raw, 1)
    assert status == 404, body
    assert b"access_token" not in body


# -- limits -------------------------------------------------------------------------------------


def test_slow_heads_and_slow_bodies_are_closed_in_time_while_others_are_served(server: Service, auth: bytes) -> None:
    body_head = token_request(auth, body=b"x" * 100)[:-100]
    slowloris, slow_body, slow_chunks, idle = (connect(server) for _ in range(4))
    slowloris.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    slow_body.sendall(body_head + b"grant")
    slow_chunks.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM + b"\r\nAuthorization: " + auth
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ngrant\r\n"
    )  # fmt: skip
    started = time.monotonic()
    for _ in range(3):  # keep dripping, below the timeouts, while other clients are served
        time.sleep(0.4)
        slowloris.sendall(b"X-Drip: 1\r\n")
        slow_body.sendall(b"_")
        slow_chunks.sendall(b"1\r\n_\r\n")
        assert_serving(server, auth)
    # No more bytes from here on, so a closing server has nothing unread and ends each with a clean EOF.
    for sock in (slow_body, slow_chunks):
        reader = Reader(sock)
        status, headers, _ = reader.read()
        assert status == 408
        assert headers["connection"] == "close"
        assert reader.at_eof()
        assert BODY_TIMEOUT - 0.2 <= time.monotonic() - started <= BODY_TIMEOUT + SLACK
    for sock in (slowloris, idle):  # hyper closes a connection whose head is late without an answer
        assert Reader(sock).at_eof()
        assert HEADER_TIMEOUT - 0.2 <= time.monotonic() - started <= HEADER_TIMEOUT + SLACK
    assert_serving(server, auth)


def test_header_count_and_size_limits_answer_431_and_close(server: Service) -> None:
    heads = {
        "over max-headers": b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)),
        "over the parser's 100": b"".join(b"X-H%d: v\r\n" % i for i in range(150)),
        "over max-header-bytes": b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n",
    }
    for name, extra in heads.items():
        [(status, _, _)], reader = answers(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n", 1)
        assert status == 431, name
        assert reader.at_eof(), name
    [(status, _, _)], _ = answers(
        server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: " + b"a" * 4000 + b"\r\n\r\n", 1
    )
    assert status == 200


def test_bodies_over_the_limit_get_413_before_they_are_read(server: Service, auth: bytes) -> None:
    # A declared length over the limit: refused at once, without 100 Continue, and nothing is read.
    raw = token_request(auth, b"Expect: 100-continue\r\n", b"")
    raw = raw.replace(b"Content-Length: 0", b"Content-Length: 100000000")
    [(status, headers, _)], reader = answers(server, raw, 1)
    assert status == 413
    assert headers["connection"] == "close"
    assert reader.at_eof()
    # A chunked body is cut as soon as it passes the limit.
    sock = connect(server)
    sock.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM + b"\r\nAuthorization: " + auth
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"1388\r\n" + b"x" * 5000 + b"\r\n") * 2
    )  # fmt: skip
    reader = Reader(sock)
    assert reader.read()[0] == 413
    assert reader.at_eof()
    # Exactly at the limit is the application's to judge.
    body = b"grant_type=client_credentials&pad="
    [(status, _, answer)], _ = answers(server, token_request(auth, body=body + b"x" * (MAX_BODY - len(body))), 1)
    assert status == 200, answer


def test_the_concurrency_cap_answers_503_and_spares_the_revocation_feed(start: StartService) -> None:
    service = start(**{**LIMITS, "body-timeout": "5s", "max-concurrency": "2"})
    client = service.register()
    auth = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())
    body = b"grant_type=client_credentials"
    busy = [connect(service) for _ in range(2)]
    for sock in busy:  # inside the app, waiting for the rest of the body
        sock.sendall(token_request(auth, body=body)[:-5])
    time.sleep(0.5)
    [(status, headers, answer)], reader = answers(service, token_request(auth), 1)
    assert status == 503, answer
    assert headers["retry-after"] == "1"
    assert reader.at_eof()
    [(status, _, answer)], _ = answers(service, b"GET /v1/revocations?since=0 HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert status == 200, answer
    for sock in busy:
        sock.sendall(body[-5:])
        assert Reader(sock).read()[0] == 200
    assert_serving(service, auth)


# -- memory ------------------------------------------------------------------------------------


def push_until_blocked(socks: list[socket.socket], data: bytes, seconds: float) -> list[int]:
    """Send ``data`` repeatedly on every socket for ``seconds`` without reading; bytes the server took, each."""
    sent = [0] * len(socks)
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        progress = False
        for i, sock in enumerate(socks):
            try:
                sent[i] += sock.send(data)
                progress = True
            except BlockingIOError:
                pass
        if not progress:
            time.sleep(0.05)
    return sent


def test_clients_that_never_read_cost_bounded_memory(server: Service, auth: bytes) -> None:
    """Pipelined requests whose answers are never read: the server stops reading instead of queueing answers."""
    before = rss_mib(server)
    socks = [connect(server, rcvbuf=4096) for _ in range(20)]
    sent = push_until_blocked(socks, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 500, seconds=4.0)
    grown = rss_mib(server) - before
    # Unbounded, the server would keep reading; what it took is what the kernel buffers hold.
    assert max(sent) < 16 * 1024 * 1024, sent
    assert grown < 40, f"{grown:.1f} MiB for {len(socks)} non-reading clients ({sum(sent) >> 20} MiB of requests)"
    assert_serving(server, auth)
    for sock in socks:
        sock.close()


def test_unauthenticated_bodies_are_not_buffered(start: StartService) -> None:
    """The default 1 MiB limit: an admin call without credentials is refused before its body is read."""
    service = start()
    body_size = 1024 * 1024
    head = (
        b"PUT /v1/admin/accounts/" + str(uuid.uuid4()).encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(body_size).encode() + b"\r\n\r\n"
    )
    before = rss_mib(service)
    socks = [connect(service, rcvbuf=4096) for _ in range(50)]
    for sock in socks:
        sock.sendall(head)
    for sock in socks:
        reader = Reader(sock)
        assert reader.read()[0] == 401  # answered with the body still unsent
    grown = rss_mib(service) - before
    assert grown < 25, f"{grown:.1f} MiB for {len(socks)} unauthenticated 1 MiB bodies"


async def _revocations(store_url: str, count: int) -> None:
    store = open_store(store_url)
    await store.migrate()
    now = datetime.now(UTC)
    try:
        for _ in range(count):
            await store.revoke_token(uuid.uuid4().hex, "feed-test", now + timedelta(hours=1), now)
    finally:
        await store.close()


def test_subscribers_that_never_read_the_revocation_feed_cost_bounded_memory(
    start: StartService, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store_url = sqlite_url(tmp_path_factory.mktemp("feed") / "store.db")
    asyncio.run(_revocations(store_url, FEED_EVENTS))
    service = start(store_url=store_url)
    request = b"GET /v1/revocations?since=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    sock = connect(service)
    sock.sendall(request)
    sock.settimeout(2.0)
    stream = 0
    try:  # the backlog, read by a client that keeps up
        while data := sock.recv(1 << 20):
            stream += len(data)
    except TimeoutError:
        pass
    sock.close()
    assert stream > 1024 * 1024
    before = rss_mib(service)
    subscribers = [connect(service, rcvbuf=4096) for _ in range(40)]
    for sub in subscribers:
        sub.sendall(request)
    time.sleep(3.0)
    per_subscriber = (rss_mib(service) - before) * 1024 * 1024 / len(subscribers)
    assert per_subscriber < stream / 2, f"{per_subscriber / 1024:.0f} KiB per subscriber, stream {stream >> 10} KiB"
    assert service.process.poll() is None
    with service.http() as http:
        assert http.get("/readyz").status_code == 200
    for sub in subscribers:
        sub.close()


# -- shutdown ----------------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_ends_streams_and_exits_cleanly(start: StartService) -> None:
    service = start(**{**LIMITS, "shutdown-timeout": "8s"})
    client = service.register()
    auth = b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())
    long_poll = connect(service)
    long_poll.sendall(b"GET /v1/revocations?since=999999999&wait=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    stream = connect(service)
    stream.sendall(b"GET /v1/revocations?since=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    stream_reader = Reader(stream)
    while b"credward revocation feed" not in stream_reader.buffer:
        stream_reader._fill()
    body = b"grant_type=client_credentials"
    half = connect(service)
    half.sendall(token_request(auth, body=body)[:-4])  # in flight: the app waits for the rest of the body
    time.sleep(0.3)
    stopped_at = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    half.sendall(body[-4:])
    status, _, answer = Reader(half).read()
    assert status == 200, answer
    assert b"access_token" in answer
    status, _, answer = Reader(long_poll).read()
    assert status == 200, answer
    assert json.loads(answer)["events"] == []
    stream.settimeout(5.0)
    while stream.recv(65536):  # the stream is ended by the server, not left to the kill
        pass
    assert service.process.wait(timeout=15) == 0, service.logs()[-2000:]
    assert time.monotonic() - stopped_at < 8
    assert any('"outcome":"issued"' in line for line in service.audit_lines())
    with pytest.raises(httpx.ConnectError):
        httpx.get(service.base_url + "/healthz", timeout=2)


def test_a_request_still_running_after_the_shutdown_timeout_is_answered_503(start: StartService) -> None:
    service = start(**{"shutdown-timeout": "1s", "feed-max-wait": "30s"})
    sock = connect(service)
    sock.sendall(b"GET /v1/revocations?since=999999999&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    stopped_at = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    status, _, answer = Reader(sock).read()
    assert status == 503, answer
    assert service.process.wait(timeout=15) == 0, service.logs()[-2000:]
    assert time.monotonic() - stopped_at < 1 + SLACK + 2
    assert "Traceback" not in service.logs()

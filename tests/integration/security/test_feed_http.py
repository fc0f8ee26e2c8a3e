"""The revocation feed's streams over real sockets: a subscriber that stops reading is dropped, not buffered for.

(How many subscribers one replica holds, and how fast a revocation reaches all of them, is measured by
``python -m bench.feed``, not here.)
"""

from __future__ import annotations

import re
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
from tests.integration.security.conftest import Registered, Service, StartService

pytestmark = pytest.mark.integration

MAX_REVOCATIONS = 3000
ID_LINE = re.compile(rb"^id: (\d+)$", re.MULTILINE)


def metric(service: Service, name: str) -> float:
    for line in httpx.get(service.base_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def open_stream(service: Service, since: int, *, small: bool = False) -> socket.socket:
    """A raw ``GET /v1/revocations`` asking for server-sent events; nothing is read from it here.

    ``small``: a client with a small receive window and segment size (set before connecting, so they are
    what the handshake announces). On loopback the kernel would otherwise buffer megabytes for a client
    that does not read, and the service would see it fall behind only after that.
    """
    url = urlsplit(service.base_url)
    sock = socket.socket()
    if small:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect((url.hostname or "127.0.0.1", url.port or 80))
    head = f"GET /v1/revocations?since={since} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(head.encode())
    return sock


class Reader(threading.Thread):
    """Reads a stream as fast as it comes and remembers the event ids."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.data = b""

    def run(self) -> None:
        while chunk := self.sock.recv(65536):
            self.data += chunk

    def ids(self) -> list[int]:
        return [int(m) for m in ID_LINE.findall(self.data)]


def latest_cursor(http: httpx.Client, since: int) -> int:
    """The feed's newest cursor, paging through (each answer holds at most 500 events)."""
    while True:
        cursor = int(http.get("/v1/revocations", params={"since": since}).json()["cursor"])
        if cursor == since:
            return cursor
        since = cursor


def revoke_one(http: httpx.Client, client: Registered) -> None:
    auth = (client.client_id, client.secret)
    token = http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth).json()["access_token"]
    response = http.post("/oauth2/revoke", data={"token": token}, auth=auth)
    assert response.status_code == 200, response.text


def test_a_subscriber_that_stops_reading_is_dropped_while_others_get_everything(
    start_service: StartService,
) -> None:
    service = start_service(feed_subscriber_buffer="2", throttle_client_failures="1000000")
    client = service.register()
    start = int(httpx.get(service.base_url + "/v1/revocations").json()["cursor"])
    slow = open_stream(service, start, small=True)
    reader = Reader(open_stream(service, start))
    reader.start()
    wait_for(lambda: metric(service, "credward_feed_subscribers") == 2)
    with service.http() as http:
        for n in range(1, MAX_REVOCATIONS + 1):
            revoke_one(http, client)
            if n % 25 == 0 and metric(service, "credward_feed_subscribers_dropped_total") >= 1:
                break
        last = latest_cursor(http, start)
    assert metric(service, "credward_feed_subscribers_dropped_total") == 1, f"not dropped after {n} revocations"
    assert metric(service, "credward_feed_subscribers") == 1
    wait_for(lambda: reader.ids()[-1:] == [last])
    assert n < MAX_REVOCATIONS
    print(f"dropped after {n} revocations")
    assert reader.ids() == sorted(set(reader.ids()))  # in order, none twice; the reader kept up with all of them

    # The dropped stream ends (chunked terminator) after what was already on its way; it was not kept growing.
    slow.settimeout(10)
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = slow.recv(65536)
        assert chunk, "the server closed the dropped stream without ending it"
        received += chunk
    slow.close()
    seen = [int(m) for m in ID_LINE.findall(received)]
    assert seen
    assert seen[-1] < last
    # Its client reconnects with the last id it saw and catches up on everything it missed.
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(seen[-1])}
    caught_up: list[int] = []
    with httpx.stream("GET", service.base_url + "/v1/revocations", headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                caught_up.append(int(line.removeprefix("id: ")))
                if caught_up[-1] == last:
                    break
    assert caught_up[0] > seen[-1]
    assert caught_up == sorted(set(caught_up))
    assert set(seen) | set(caught_up) >= set(reader.ids())

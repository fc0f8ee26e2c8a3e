"""The revocation feed under load: thousands of server-sent-event subscribers on one replica.

    python -m bench.feed [--subscribers 5000] [--revocations 20] [--slow 50] [--burst 2000]

Starts ``credward security serve`` (SQLite, one process) and measures, in one run:

1. memory: the service's resident set before and after ``--subscribers`` streams are open, per subscriber;
2. delivery: ``--revocations`` account revocations, one every ``--interval`` seconds through the admin API;
   for each, the time from sending the revocation to each subscriber having read its event. Every
   subscriber must receive every event; p50/p99/max over all deliveries (goal: p99 <= 1 s);
3. slow subscribers: ``--slow`` more streams that never read (small TCP window) while ``--burst`` token
   revocations go out; each must be dropped (``credward_feed_subscribers_dropped_total``), the readers
   must miss nothing, and the service's memory must stay bounded.

The subscribers are plain asyncio protocols in this process (uvloop), so a delivery time includes this
process noticing the bytes: the figure is an upper bound. Writes ``bench/feed_results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from credward.domain.secrets import hash_secret, new_client_id, new_client_secret

ID_LINE = re.compile(rb"\nid: (\d+)\n")
RESULTS = Path(__file__).with_name("feed_results.json")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Arrivals:
    """When each event id reached each subscriber; wakes whoever waits for an id to reach everyone."""

    def __init__(self, everyone: int) -> None:
        self.everyone = everyone
        self.times: dict[int, list[float]] = {}
        self._waiting: dict[int, asyncio.Event] = {}

    def record(self, cursor: int, at: float) -> None:
        times = self.times.setdefault(cursor, [])
        times.append(at)
        if len(times) >= self.everyone and cursor in self._waiting:
            self._waiting[cursor].set()

    async def everyone_has(self, cursor: int, seconds: float) -> list[float]:
        if len(self.times.get(cursor, ())) < self.everyone:
            event = self._waiting.setdefault(cursor, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        return self.times.get(cursor, [])


class Subscriber(asyncio.Protocol):
    """One SSE stream; records when each event id arrived."""

    def __init__(self, request: bytes, arrivals: Arrivals) -> None:
        self.request = request
        self.arrivals = arrivals
        self.tail = b""
        self.started = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.started.done() and b"credward revocation feed" in data:
            self.started.set_result(None)
        text = self.tail + data
        for match in ID_LINE.finditer(text):
            self.arrivals.record(int(match.group(1)), now)
        self.tail = text[-64:]


def open_silent(port: int, count: int, since: int) -> list[socket.socket]:
    """Streams whose client never reads, with a small TCP window (see tests/integration/security/test_feed_http)."""
    request = (
        f"GET /v1/revocations?since={since} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    opened = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        opened.append(sock)
    return opened


async def open_subscribers(port: int, count: int, since: int, arrivals: Arrivals) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET /v1/revocations?since={since} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(100)

    async def one() -> None:
        async with gate:
            _, protocol = await loop.create_connection(lambda: Subscriber(request, arrivals), "127.0.0.1", port)
            async with asyncio.timeout(60):
                await protocol.started
            subscribers.append(protocol)

    await asyncio.gather(*(one() for _ in range(count)))
    return subscribers


async def metric(http: httpx.AsyncClient, name: str) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no metric {name}")


async def until_metric(http: httpx.AsyncClient, name: str, value: float) -> None:
    async with asyncio.timeout(120):
        while await metric(http, name) != value:  # noqa: ASYNC110 - the service's state, seen only over HTTP
            await asyncio.sleep(0.2)


@dataclass
class Running:
    """The service under test and what was set up in it."""

    process: subprocess.Popen[bytes]
    base: str
    port: int
    admin: dict[str, str]
    victims: list[str]
    burster: tuple[str, str]


def start_service(args: argparse.Namespace, tmp: Path) -> Running:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    admin_token = secrets.token_urlsafe(32)
    (tmp / "admin-token").write_text(admin_token)
    hash_key = secrets.token_hex(32).encode()
    (tmp / "hash.key").write_bytes(hash_key)
    flags = {
        "issuer": base,
        "port": str(port),
        "store-url": f"sqlite:///{tmp / 'store.db'}",
        "keys-dir": str(tmp / "keys"),
        "hash-key-file": str(tmp / "hash.key"),
        "dev-mode": "true",
        "admin-auth": "bearer-file",
        "admin-token-file": str(tmp / "admin-token"),
        "log-level": "WARNING",
        "throttle-ip-failures": "1000000",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWARD_SECURITY_")}
    if args.http_server:
        env["CREDWARD_SECURITY_HTTP_SERVER"] = args.http_server
    cmd = [sys.executable, "-m", "credward.cli", "security", "serve", *(f"--{k}={v}" for k, v in flags.items())]
    with (tmp / "service.log").open("wb") as log:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    admin = {"Authorization": f"Bearer {admin_token}"}
    running = Running(process, base, port, admin, [], ("", ""))
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((tmp / "service.log").read_text()[-2000:])
                time.sleep(0.1)
            # Accounts to revoke (one per delivery measured) and one client for the burst of token revocations.
            running.victims = [new_client_id() for _ in range(args.revocations)]
            for client_id in running.victims:
                assert http.put(f"/v1/admin/accounts/{client_id}", json={}, headers=admin).status_code == 201
            burster, secret = new_client_id(), new_client_secret()
            account = {"secrets": [{"id": "s1", "hash": hash_secret(hash_key, secret)}]}
            assert http.put(f"/v1/admin/accounts/{burster}", json=account, headers=admin).status_code == 201
            running.burster = (burster, secret)
    except BaseException:
        stop(running)
        raise
    return running


def stop(running: Running) -> None:
    running.process.terminate()
    running.process.wait(timeout=30)


async def newest_cursor(http: httpx.AsyncClient, since: int) -> int:
    while (cursor := int((await http.get("/v1/revocations", params={"since": since})).json()["cursor"])) != since:
        since = cursor
    return since


async def measure(args: argparse.Namespace, svc: Running) -> dict[str, Any]:
    pid, admin = svc.process.pid, svc.admin
    async with httpx.AsyncClient(base_url=svc.base, timeout=60) as http:
        since = await newest_cursor(http, 0)
        rss_before = rss_kib(pid)
        arrivals = Arrivals(args.subscribers)
        opened = time.perf_counter()
        readers = await open_subscribers(svc.port, args.subscribers, since, arrivals)
        await until_metric(http, "credward_feed_subscribers", args.subscribers)
        open_seconds = time.perf_counter() - opened
        await asyncio.sleep(1.0)
        rss_open = rss_kib(pid)

        # 2. delivery latency, one revocation at a time
        latencies: list[float] = []
        missing = 0
        for client_id in svc.victims:
            sent = time.perf_counter()
            response = await http.post(f"/v1/admin/accounts/{client_id}/revoke", headers=admin)
            times = await arrivals.everyone_has(int(response.json()["cursor"]), 10.0)
            missing += args.subscribers - len(times)
            latencies += [t - sent for t in times]
            await asyncio.sleep(args.interval)

        # 3. slow subscribers during a burst
        slow = open_silent(svc.port, args.slow, since)
        await until_metric(http, "credward_feed_subscribers", args.subscribers + args.slow)
        rss_slow_open = rss_kib(pid)
        burst_started = time.perf_counter()
        gate = asyncio.Semaphore(8)

        async def revoke_token() -> None:
            async with gate:
                form = {"grant_type": "client_credentials"}
                token = (await http.post("/oauth2/token", data=form, auth=svc.burster)).json()["access_token"]
                answer = await http.post("/oauth2/revoke", data={"token": token}, auth=svc.burster)
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(revoke_token() for _ in range(args.burst)))
        burst_seconds = time.perf_counter() - burst_started
        last = await newest_cursor(http, since)
        readers_complete = len(await arrivals.everyone_has(last, 30.0))
        dropped = await metric(http, "credward_feed_subscribers_dropped_total")
        open_now = await metric(http, "credward_feed_subscribers")
        rss_after_burst = rss_kib(pid)
        for sub in readers:
            if sub.transport is not None:
                sub.transport.abort()
        for sock in slow:
            sock.close()

    deliveries = len(latencies)
    return {
        "subscribers": args.subscribers,
        "revocations": args.revocations,
        "open_seconds": round(open_seconds, 2),
        "service_rss_kib": {
            "before": rss_before,
            "subscribers_open": rss_open,
            "slow_open": rss_slow_open,
            "after_burst": rss_after_burst,
        },
        "rss_per_subscriber_kib": round((rss_open - rss_before) / args.subscribers, 2),
        "delivery": {
            "deliveries": deliveries,
            "missing": missing,
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        },
        "slow": {
            "slow_subscribers": args.slow,
            "burst_revocations": args.burst,
            "burst_seconds": round(burst_seconds, 1),
            "dropped": int(dropped),
            "still_open": int(open_now),
            "readers_with_every_event": readers_complete,
            "rss_growth_during_burst_kib": rss_after_burst - rss_slow_open,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--revocations", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between measured revocations")
    parser.add_argument("--slow", type=int, default=50, help="subscribers that never read")
    parser.add_argument("--burst", type=int, default=2000, help="token revocations while the slow ones hang")
    parser.add_argument("--http-server", default="", help="CREDWARD_SECURITY_HTTP_SERVER for the service, if any")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (args.subscribers + args.slow) + 200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))  # the service inherits it
    import uvloop

    with tempfile.TemporaryDirectory(prefix="credward-feed-bench-") as tmp:
        service = start_service(args, Path(tmp))
        try:
            results = uvloop.run(measure(args, service))
        finally:
            stop(service)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    delivery = results["delivery"]
    ok = (
        delivery["missing"] == 0
        and delivery["p99_ms"] is not None
        and delivery["p99_ms"] <= 1000
        and results["slow"]["dropped"] == args.slow
        and results["slow"]["readers_with_every_event"] == args.subscribers
    )
    print(
        "goal (every event to every subscriber, p99 <= 1 s, every slow subscriber dropped):", "met" if ok else "NOT met"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

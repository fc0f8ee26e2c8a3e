"""Benchmark of the token endpoint against the raw ES256 signing rate of one core.

    python -m bench.token_endpoint [--duration 10] [--connections 16] [--out bench/results.json]

What it does, in one run on this machine:

1. **Raw sign rate**: ES256 signatures per second of one core with plain
   ``cryptography`` (``key.sign(data, ECDSA(SHA256()))`` over a token-sized
   signing input), pinned to the CPU the service will use.
2. **Peak**: ``credward security serve`` (one worker process on uvloop;
   ``--http-server`` picks credward's own server, the default, or uvicorn;
   SQLite store) pinned to that CPU, driven by ``wrk`` pinned to the
   other CPUs: keep-alive connections, fixed concurrency, client_secret_basic.
   Reports tokens/s, p50, p99, non-200 answers, and tokens per CPU-second of
   the worker (robust against other load on the machine).
3. **Half load**: wrk cannot hold a fixed rate, so an open-loop generator in a
   separate process (asyncio over raw keep-alive sockets) sends at half the
   measured peak and measures each latency from the request's *scheduled*
   send time, so a stalled server cannot hide queueing (no coordinated omission).

Results go to ``bench/results.json``. Goals (issue 3): tokens/s per worker
>= 0.4 x raw sign rate, p99 <= 5 ms at half of peak load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import jwt

from credward.domain.secrets import hash_secret, new_client_id, new_client_secret

HERE = Path(__file__).resolve().parent
GOAL_RATIO = 0.4
GOAL_P99_MS = 5.0

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "%(auth)s"

done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"p999_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


TICKS = os.sysconf("SC_CLK_TCK")
PRIORITY = -10  # when allowed (root): keep other work on a shared machine from preempting the measured processes


def realtime_env() -> bool:
    return os.environ.get("CREDWARD_BENCH_REALTIME") == "1"


def set_realtime(pid: int = 0) -> bool:
    """SCHED_FIFO for ``pid`` (0: this process) if permitted; the kernel's RT throttling still leaves others 5%."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError):
        return False
    return True


def pin(cpus: set[int], realtime: bool = False) -> None:
    """Run on ``cpus`` only, at raised priority if permitted."""
    os.sched_setaffinity(0, cpus)
    if (realtime or realtime_env()) and set_realtime():
        return
    with suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)


# -- 1. raw signing rate ------------------------------------------------------------------


def raw_sign_rate(cpu: int, seconds: float, rounds: int = 3) -> dict[str, float]:
    """Best of ``rounds``: signatures per wall second and per CPU second, pinned to ``cpu``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    before = os.sched_getaffinity(0)
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    pin({cpu})
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        algorithm = ec.ECDSA(hashes.SHA256())
        data = b"e" * 420  # a typical header.payload of a credward token
        best_wall = best_cpu = 0.0
        for _ in range(rounds):
            n = 0
            wall0, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - wall0 < seconds:
                for _ in range(200):
                    key.sign(data, algorithm)
                n += 200
            wall, used = time.perf_counter() - wall0, time.process_time() - cpu0
            best_wall, best_cpu = max(best_wall, n / wall), max(best_cpu, n / used)
    finally:
        os.sched_setaffinity(0, before)
        with suppress(PermissionError):
            os.sched_setscheduler(0, policy, param)
            os.setpriority(os.PRIO_PROCESS, 0, priority)
    return {"signs_per_s": round(best_wall), "signs_per_cpu_s": round(best_cpu)}


# -- 2. the service ----------------------------------------------------------------------


class Service:
    def __init__(self, workdir: Path, cpu: int, http_server: str = "credward") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(32)
        self.hash_key = secrets.token_hex(32).encode()
        (workdir / "admin-token").write_text(self.admin_token)
        (workdir / "hash.key").write_bytes(self.hash_key)
        cmd = [
            sys.executable, "-m", "credward.cli", "security", "serve",
            f"--issuer={self.base_url}", f"--port={self.port}",
            f"--store-url=sqlite:///{workdir / 'store.db'}", f"--keys-dir={workdir / 'keys'}",
            f"--hash-key-file={workdir / 'hash.key'}", "--dev-mode=true",
            "--admin-auth=bearer-file", f"--admin-token-file={workdir / 'admin-token'}",
            "--log-level=WARNING", f"--http-server={http_server}",
        ]  # fmt: skip
        self._log = (workdir / "service.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWARD_SECURITY_")}
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log, env=env, preexec_fn=lambda: pin({cpu})
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"service did not start; see {workdir / 'service.log'}")

    def register(self) -> tuple[str, str]:
        client_id, secret = new_client_id(), new_client_secret()
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        body = {
            "displayName": "bench",
            "audiences": ["https://storage.example"],
            "groups": ["/bench/prod", "/bench"],
            "secrets": [{"id": "s1", "hash": hash_secret(self.hash_key, secret)}],
        }
        url = f"{self.base_url}/v1/admin/accounts/{client_id}"
        httpx.put(url, json=body, headers=headers).raise_for_status()
        roles = {
            "mappings": [{"name": "rb", "roles": ["reader"], "permissions": [{"verbs": ["read"], "path": ["data"]}]}]
        }
        httpx.put(url + "/role-mappings", json=roles, headers=headers).raise_for_status()
        return client_id, secret

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


# -- 3. load ----------------------------------------------------------------------------


def run_wrk(
    service: Service,
    auth: str,
    cpus: set[int],
    connections: int,
    seconds: int,
    script: Path,
    path: str = "/oauth2/token",
) -> dict[str, Any]:
    """wrk at fixed concurrency; for any ``path`` but the token endpoint, a plain GET with the same report."""
    text = WRK_SCRIPT % {"auth": auth}
    if path != "/oauth2/token":
        text = "done = function" + text.split("done = function", 1)[1]
    script.write_text(text)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), service.base_url + path]
    ticks0 = cpu_ticks(service.process.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=lambda: pin(cpus)).stdout
    used = (cpu_ticks(service.process.pid) - ticks0) / TICKS
    raw = json.loads(next(line for line in out.splitlines() if line.startswith('{"requests"')))
    duration = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status_errors"]
    return {
        "connections": connections,
        "duration_s": round(duration, 2),
        "requests": raw["requests"],
        "non_200": raw["status_errors"],
        "socket_errors": raw["socket_errors"],
        "tokens_per_s": round(ok / duration),
        "tokens_per_worker_cpu_s": round(ok / used) if used else None,
        "worker_cpu_utilisation": round(used / duration, 2),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
    }


def _fixed_rate_worker(
    port: int, auth: str, rate: float, seconds: float, conns: int, cpus: list[int], out: Any
) -> None:
    """Open-loop load at ``rate`` req/s; latency from each request's scheduled time (runs in its own process)."""
    pin(set(cpus), realtime=True)
    body = b"grant_type=client_credentials"
    request = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Authorization: " + auth.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def main() -> dict[str, Any]:
        idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(conns):
            idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        latencies: list[float] = []
        lateness: list[float] = []
        statuses: dict[int, int] = {}

        async def one(scheduled: float) -> None:
            reader, writer = await idle.get()
            lateness.append(time.perf_counter() - scheduled)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1
            idle.put_nowait((reader, writer))

        tasks: set[asyncio.Task[None]] = set()
        total = int(rate * seconds)
        start = time.perf_counter() + 0.05
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and start + i / rate <= now:
                task = asyncio.ensure_future(one(start + i / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=1000)
        return {
            "target_rate": round(rate),
            "achieved_rate": round(len(latencies) / elapsed),
            "requests": len(latencies),
            "connections": conns,
            "statuses": statuses,
            "p50_ms": round(q[499] * 1000, 3),
            "p90_ms": round(q[899] * 1000, 3),
            "p99_ms": round(q[989] * 1000, 3),
            "p999_ms": round(q[998] * 1000, 3),
            "generator_send_lateness_p99_ms": round(statistics.quantiles(lateness, n=100)[98] * 1000, 3),
        }

    out.put(asyncio.run(main()))


def run_fixed_rate(service: Service, auth: str, rate: float, seconds: float, cpus: list[int]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    # Latency, not throughput, is measured here and neither process saturates a CPU, so both run SCHED_FIFO when
    # permitted: on a shared machine the wake-up delay behind other tenants' work would otherwise dominate p99.
    realtime = set_realtime(service.process.pid)
    ticks0 = cpu_ticks(service.process.pid)
    proc = ctx.Process(target=_fixed_rate_worker, args=(service.port, auth, rate, seconds, 64, cpus, queue))
    proc.start()
    result: dict[str, Any] = queue.get(timeout=seconds + 120)
    proc.join()
    result["worker_cpu_utilisation"] = round((cpu_ticks(service.process.pid) - ticks0) / TICKS / seconds, 2)
    result["scheduling"] = "SCHED_FIFO (service and generator)" if realtime else f"nice {PRIORITY}"
    return result


# -- report -------------------------------------------------------------------------------


SERVERS = {
    "credward": "credward.security.httpserver (httptools on uvloop), 1 worker; token endpoint native, the rest ASGI",
    "uvicorn": "uvicorn + uvloop + httptools (corked: one write per response), 1 worker; token endpoint raw ASGI",
}


def environment(http_server: str) -> dict[str, Any]:
    import cryptography
    import uvicorn

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "uvicorn": uvicorn.__version__,
        "server": SERVERS[http_server],
        "store": "SQLite",
        "scheduling_peak": "SCHED_FIFO" if realtime_env() else f"nice {PRIORITY} (SCHED_FIFO with --realtime)",
    }


@contextmanager
def workdir() -> Any:
    path = Path(tempfile.mkdtemp(prefix="credward-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per load phase")
    parser.add_argument("--connections", type=int, default=16, help="wrk's fixed concurrency")
    parser.add_argument("--repeat", type=int, default=2, help="peak runs (the best is reported)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--http-server", choices=["credward", "uvicorn"], default="credward", help="the server under test"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run the measured processes SCHED_FIFO (root; for a busy shared machine)",
    )
    args = parser.parse_args(argv)
    if args.realtime:
        os.environ["CREDWARD_BENCH_REALTIME"] = "1"  # inherited by the spawned load process
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0]
    load_cpus = cpus[1:] or cpus
    env = environment(args.http_server)
    print(f"raw ES256 signing on cpu {server_cpu} ...", flush=True)
    sign = raw_sign_rate(server_cpu, seconds=2.0)
    print(f"  {sign}", flush=True)
    with workdir() as tmp:
        service = Service(tmp, server_cpu, args.http_server)
        try:
            client_id, secret = service.register()
            auth = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            check = httpx.post(
                service.base_url + "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
            )
            token = check.json()["access_token"]
            key = jwt.PyJWKClient(service.base_url + "/jwks.json").get_signing_key_from_jwt(token)
            jwt.decode(
                token, key.key, algorithms=["ES256"], audience="https://storage.example", issuer=service.base_url
            )
            run_wrk(service, auth, set(load_cpus), args.connections, 2, tmp / "warm.lua")  # warm-up
            peaks = []
            for n in range(args.repeat):
                print(f"peak run {n + 1}: wrk -c{args.connections} for {args.duration}s ...", flush=True)
                peaks.append(run_wrk(service, auth, set(load_cpus), args.connections, args.duration, tmp / "post.lua"))
                print(f"  {peaks[-1]}", flush=True)
            peak = max(peaks, key=lambda p: p["tokens_per_s"])
            print(f"HTTP floor: wrk GET /healthz -c{args.connections} for {args.duration}s ...", flush=True)
            floor = run_wrk(service, auth, set(load_cpus), args.connections, args.duration, tmp / "get.lua", "/healthz")
            print(f"  {floor}", flush=True)
            half = peak["tokens_per_s"] / 2
            print(f"half load: {half:.0f} req/s fixed rate for {args.duration}s ...", flush=True)
            half_load = run_fixed_rate(service, auth, half, args.duration, load_cpus)
            print(f"  {half_load}", flush=True)
        finally:
            service.stop()
    ratio_wall = peak["tokens_per_s"] / sign["signs_per_s"]
    ratio_cpu = (peak["tokens_per_worker_cpu_s"] or 0) / sign["signs_per_cpu_s"]
    results = {
        "benchmark": "credward token endpoint (client_credentials, client_secret_basic, ES256)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {**env, "load_average_at_end": os.getloadavg()},
        "raw_es256_sign": sign,
        "peak": peak,
        "peak_runs": peaks,
        "half_load": half_load,
        "http_floor_healthz": {
            "what": "GET /healthz on the same worker, no app work (native on credward, raw ASGI on uvicorn)",
            "requests_per_s": floor["tokens_per_s"],
            "requests_per_worker_cpu_s": floor["tokens_per_worker_cpu_s"],
            "p50_ms": floor["p50_ms"],
            "p99_ms": floor["p99_ms"],
            "ratio_ceiling_if_tokens_cost_only_http_plus_sign": round(
                1
                / (1 / (floor["tokens_per_worker_cpu_s"] or 1) + 1 / sign["signs_per_cpu_s"])
                / sign["signs_per_cpu_s"],
                3,
            ),
        },
        "ratio_tokens_to_raw_signs": round(ratio_wall, 3),
        "ratio_per_cpu_second": round(ratio_cpu, 3),
        "goals": {
            "ratio_at_least": GOAL_RATIO,
            "ratio_met": ratio_wall >= GOAL_RATIO,
            "half_load_p99_ms_at_most": GOAL_P99_MS,
            "half_load_p99_met": half_load["p99_ms"] <= GOAL_P99_MS,
        },
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\ntokens/s {peak['tokens_per_s']} (p50 {peak['p50_ms']} ms, p99 {peak['p99_ms']} ms, c={args.connections}); "
        f"raw ES256 signs/s {sign['signs_per_s']}; ratio {ratio_wall:.2f} (per CPU-second {ratio_cpu:.2f}); "
        f"p99 at half load ({half_load['achieved_rate']}/s) {half_load['p99_ms']} ms -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

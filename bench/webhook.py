"""Benchmark of the admission webhook: Pod create latency it adds, and its own request rate on one core.

    python -m bench.webhook [--pods 300] [--seconds 10] [--concurrency 16] [--out bench/webhook.json]

One run, one local control plane (etcd + kube-apiserver + controller manager), one webhook
process (``python -m credward.webhook``, exactly as the tests run it):

1. Pod creates of three kinds, interleaved (one of each in turn, so load from elsewhere on the
   machine hits all three alike): **baseline**, in a namespace the webhooks exclude (no webhook is
   called); **opted out**, no label (only the fail-open validating webhook sees it); **opted in**,
   ``credward.io/inject: "true"`` (mutated and checked in one call). p50/p99 of each; what
   credward adds is the difference to the baseline of the same run;
2. **request rate**: the webhook's mutate endpoint driven directly over HTTPS with keep-alive by
   ``--concurrency`` clients for ``--seconds``; reported per CPU-second of the webhook process
   (a single-threaded event loop, so this is its rate on one core, whatever else the machine
   runs) and per wall second.

Creates go over one keep-alive HTTPS connection (httpx) as the admin user, so kubectl start-up
is not measured. Goal (issue 10): p99 added <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOAL_P99_ADDED_MS = 10.0
LABELS = {"credward.io/inject": "true"}
ANNOTATIONS = {"credward.io/credential": "bench"}


def pod(name: str, opted_in: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "bench", **(LABELS if opted_in else {})},
            "annotations": ANNOTATIONS if opted_in else {},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/app:1",
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                },
                {"name": "proxy", "image": "registry.example/proxy:1"},
            ]
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def api_client(plane: ControlPlane) -> httpx.Client:
    pki = plane.pki_dir
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    return httpx.Client(base_url=plane.server, verify=ctx, timeout=30)


KINDS = ("baseline", "opted_out", "opted_in")


def create_pods(api: httpx.Client, namespaces: dict[str, str], rounds: int, prefix: str) -> dict[str, list[float]]:
    """``rounds`` rounds of one Pod of each kind; milliseconds per create, by kind."""
    out: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for i in range(rounds):
        for kind in KINDS:
            body = pod(f"{prefix}-{kind.replace('_', '-')}-{i}", kind == "opted_in")
            start = time.perf_counter()
            resp = api.post(f"/api/v1/namespaces/{namespaces[kind]}/pods", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            if resp.status_code != 201:
                raise SystemExit(f"pod create failed ({resp.status_code}): {resp.text[:300]}")
            if (kind == "opted_in") != ("credward-bench" in resp.text):
                raise SystemExit(f"a {kind} pod was stored {'without' if kind == 'opted_in' else 'with'} injection")
            out[kind].append(elapsed)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(url: str, bundle: str, body: bytes, seconds: float, concurrency: int) -> int:
    ctx = ssl.create_default_context(cadata=bundle)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(verify=ctx, limits=limits, timeout=10) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                resp = await client.post(url, content=body, headers={"content-type": "application/json"})
                if resp.status_code != 200 or b'"allowed":true' not in resp.content.replace(b" ", b""):
                    raise SystemExit(f"webhook answered {resp.status_code}: {resp.text[:200]}")
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def start_webhook(
    plane: ControlPlane, state: Path, namespace: str, excluded: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
        "KUBECONFIG": str(plane.user_kubeconfig("credward-webhook", ["system:masters"])),
        "CREDWARD_SECURITY_BASE_URL": "http://credward-security.bench:9000",
        "CREDWARD_WEBHOOK_PORT": str(port),
        "CREDWARD_WEBHOOK_BIND": "127.0.0.1",
        "CREDWARD_WEBHOOK_URL": f"https://127.0.0.1:{port}",
        "CREDWARD_WEBHOOK_NAMESPACE": namespace,
        "CREDWARD_WEBHOOK_EXCLUDED_NAMESPACES": f"kube-system,{excluded}",
    }
    log = (state / "webhook.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "credward.webhook"], env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, port


def wait_configured(plane: ControlPlane, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the webhook exited with {proc.returncode}")
        if plane.kubectl("get", "mutatingwebhookconfiguration", "credward", check=False).returncode == 0:
            time.sleep(1.5)  # the API server's configuration watch
            return
        time.sleep(0.2)
    raise SystemExit("the webhook never wrote its configurations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=300, help="pods per kind (baseline, opted out, opted in)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the request-rate phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "webhook.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="credward-bench-webhook-") as tmp:
        state = Path(tmp)
        with ControlPlane(state / "plane") as plane:
            plane.install_crds(REPO / "crds")
            namespace, plain, system = "bench", "bench-plain", f"credward-{secrets.token_hex(3)}"
            for ns in (namespace, plain, system):
                plane.kubectl("create", "namespace", ns)
            for ns in (namespace, plain):
                while plane.kubectl("get", "sa", "default", "-n", ns, check=False).returncode != 0:
                    time.sleep(0.2)
            credential = {
                "apiVersion": "credward.io/v1alpha1",
                "kind": "ServiceAccountCredential",
                "metadata": {"name": "bench", "namespace": namespace},
                "spec": {"displayName": "bench"},
            }
            plane.kubectl("apply", "-f", "-", input=json.dumps(credential))
            namespaces = {"baseline": plain, "opted_out": namespace, "opted_in": namespace}
            with api_client(plane) as api:
                proc, port = start_webhook(plane, state, system, plain)
                try:
                    wait_configured(plane, proc)
                    create_pods(api, namespaces, 20, "warm")  # connections, caches
                    latencies = create_pods(api, namespaces, args.pods, "p")
                    secret = json.loads(
                        plane.kubectl("get", "secret", "credward-webhook-tls", "-n", system, "-o", "json").stdout
                    )
                    bundle = base64.b64decode(secret["data"]["ca.crt"]).decode()
                    review = {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "request": {
                            "uid": "bench",
                            "kind": {"group": "", "version": "v1", "kind": "Pod"},
                            "namespace": namespace,
                            "operation": "CREATE",
                            "object": pod("direct", True),
                        },
                    }
                    body = json.dumps(review).encode()
                    url = f"https://127.0.0.1:{port}/mutate"
                    asyncio.run(drive(url, bundle, body, 1.0, args.concurrency))  # warm
                    cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
                    count = asyncio.run(drive(url, bundle, body, args.seconds, args.concurrency))
                    cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - wall0
                finally:
                    proc.terminate()
                    proc.wait(timeout=15)

    base, out_, in_ = (summary(latencies[kind]) for kind in KINDS)
    results = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pods_per_kind": args.pods,
        "pod_create": {"baseline_no_webhook": base, "opted_out": out_, "opted_in": in_},
        "added_to_opted_in_ms": {
            "p50": round(in_["p50_ms"] - base["p50_ms"], 2),
            "p99": round(in_["p99_ms"] - base["p99_ms"], 2),
        },
        "added_to_opted_out_ms": {
            "p50": round(out_["p50_ms"] - base["p50_ms"], 2),
            "p99": round(out_["p99_ms"] - base["p99_ms"], 2),
        },
        "webhook_mutate_rate": {
            "requests": count,
            "concurrency": args.concurrency,
            "per_cpu_second": round(count / cpu) if cpu else None,
            "per_wall_second": round(count / wall),
            "webhook_cpu_share": round(cpu / wall, 2),
        },
        "goal_p99_added_ms": GOAL_P99_ADDED_MS,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

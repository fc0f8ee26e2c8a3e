"""The operator at scale: many credentials (+ a RoleBinding each) created at once, a restart, a rotation sweep.

    python -m bench.operator [--count 1000] [--out bench/operator.json]

On a local control plane (the API server audits every request of the
operator's user, reads included: the honest counter), with the real security
service (SQLite) and the real operator (``credward operator run``, INFO
logging), ``--count`` credentials with a rotation period and one RoleBinding
each are created at once in one namespace by a client with ``--concurrency``
requests in flight. Measured:

- ``create``: from the first create sent and from the last create answered to
  every credential Ready (registered, Secret written, ``observedGeneration``
  current) and every binding Synced; the lag from each create to its Ready
  (p50/p99); the operator's API requests per credential (reads, writes, by
  verb and resource, from the audit log), its calls to the security service
  (its admin log), HTTP 429s seen by anyone, the operator's CPU seconds per
  credential (utime+stime from ``/proc``, from the first create until it is
  idle again), its peak request rate and its RSS (peak and after).
- ``restart``: the operator stopped (SIGTERM) and started with everything up to
  date: its writes, its reads (a per-object GET is any read with a name), and
  the time from the start until it is idle (its CPU under 3% for a second).
- ``rotation``: every credential annotated ``credward.io/rotate`` at once; the
  spread of the rotations (first to last ``lastRotationTime`` change), the
  time from the first annotation to the last rotation, the requests per
  credential and the peak request rate.
- ``machine``: load average and the share of the machine's CPU the bench did
  not account for (other users' work on a shared machine: the noise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from credward.devcluster import ControlPlane
from credward.devcluster.plane import free_port
from credward.devcluster.processes import OPERATOR_USER, ChildProcess, operator_process, security_process

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
GROUP, VERSION = "credward.io", "v1alpha1"
READS = {"get", "list"}
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
TICK = os.sysconf("SC_CLK_TCK")


# -- measuring ------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / TICK, total / TICK


def size(path: Path) -> int:
    return path.stat().st_size


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(ordered[-1], 3)}


class Audit:
    """The API server's audit log read from an offset: the operator's requests and every 429."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def events(self, start: int, end: int | None = None) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as fh:
            fh.seek(start)
            data = fh.read() if end is None else fh.read(end - start)
        for line in data.splitlines():
            if line.strip():
                yield json.loads(line)

    def summary(self, start: int, end: int | None, per: int) -> dict[str, Any]:
        verbs: Counter[str] = Counter()
        per_second: Counter[str] = Counter()
        named_reads = 0
        too_many = 0
        for e in self.events(start, end):
            if e.get("stage") != "ResponseComplete":
                continue
            if (e.get("responseStatus") or {}).get("code") == 429:
                too_many += 1
            if e["user"]["username"] != OPERATOR_USER or e["verb"] == "watch":
                continue
            ref = e.get("objectRef") or {}
            verbs[
                f"{e['verb']} {ref.get('resource', '?')}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
            ] += 1
            if e["verb"] == "get" and ref.get("name"):
                named_reads += 1
            stamp = e.get("requestReceivedTimestamp", "")[:19]
            per_second[stamp] += 1
        reads = sum(n for k, n in verbs.items() if k.split()[0] in READS)
        writes = sum(n for k, n in verbs.items() if k.split()[0] in WRITES)
        return {
            "reads": reads,
            "writes": writes,
            "reads_per_credential": round(reads / per, 3),
            "writes_per_credential": round(writes / per, 3),
            "per_object_reads": named_reads,
            "by_verb": dict(sorted(verbs.items())),
            "peak_requests_per_second": max(per_second.values(), default=0),
            "http_429": too_many,
        }


def service_calls(log: Path, start: int) -> dict[str, int]:
    """Admin API calls the security service logged since ``start`` (one INFO line each: ``admin METHOD PATH``)."""
    calls: Counter[str] = Counter()
    with log.open("rb") as fh:
        fh.seek(start)
        for line in fh.read().decode(errors="replace").splitlines():
            _, found, rest = line.partition(" admin ")
            if found and rest.split(" ", 1)[0] in ("GET", "PUT", "POST", "DELETE"):
                method, _, path = rest.partition(" ")
                path = path.split(" by ")[0]
                kind = "/".join("{id}" if i == 4 else p for i, p in enumerate(path.split("/")))
                calls[f"{method} {kind}"] += 1
    return {"total": sum(calls.values()), **dict(sorted(calls.items()))}


def wait_idle(pid: int, since: float, limit: float = 600.0, window: float = 1.0, share: float = 0.03) -> float:
    """Seconds from ``since`` (monotonic) to the start of the first ``window`` in which ``pid`` used < ``share`` CPU."""
    deadline = time.monotonic() + limit
    samples: list[tuple[float, float]] = [(time.monotonic(), cpu_seconds(pid))]
    while time.monotonic() < deadline:
        time.sleep(0.1)
        samples.append((time.monotonic(), cpu_seconds(pid)))
        while len(samples) > 2 and samples[-1][0] - samples[1][0] >= window:
            samples.pop(0)
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        if t1 - t0 >= window and (c1 - c0) / (t1 - t0) < share:
            return t0 - since
    raise TimeoutError("the operator never went idle")


# -- the cluster side -----------------------------------------------------------------------------------------


def credential(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServiceAccountCredential",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"displayName": f"bench {name}", "rotation": {"period": "720h", "gracePeriod": "1h"}},
    }


def binding(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RoleBinding",
        "metadata": {"name": f"{name}-roles", "namespace": NAMESPACE},
        "spec": {
            "serviceAccount": name,
            "roles": ["builder"],
            "permissions": [{"verbs": ["read"], "path": ["bench", name]}],
        },
    }


def condition(obj: dict[str, Any], type_: str) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return bool(c.get("status") == "True")
    return False


@dataclass
class Seen:
    """What the bench's own watches saw, stamped on arrival (monotonic)."""

    ready: dict[str, float] = field(default_factory=dict)
    synced: dict[str, float] = field(default_factory=dict)
    rotations: dict[str, str] = field(default_factory=dict)  # name -> lastRotationTime
    rotated: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def follow(custom: client.CustomObjectsApi, plural: str, on: Callable[[dict[str, Any]], None]) -> None:
    version = ""
    while True:
        w = watch.Watch()
        try:
            async for event in w.stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                plural,
                resource_version=version,
                timeout_seconds=600,
                allow_watch_bookmarks=True,
            ):
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    on(obj)
        except ApiException as exc:
            if exc.status != 410:
                raise
            version = ""
        finally:
            w.stop()


def credential_seen(seen: Seen) -> Callable[[dict[str, Any]], None]:
    def on(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        current = condition(obj, "Ready") and status.get("observedGeneration") == obj["metadata"].get("generation")
        now = time.monotonic()
        if current and name not in seen.ready:
            seen.ready[name] = now
            seen.changed.set()
        rotation = status.get("lastRotationTime")
        before = seen.rotations.get(name)
        if before is not None and rotation and rotation != before and name not in seen.rotated:
            seen.rotated[name] = now
            seen.changed.set()

    return on


def binding_seen(seen: Seen) -> Callable[[dict[str, Any]], None]:
    def on(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if condition(obj, "Synced") and name not in seen.synced:
            seen.synced[name] = time.monotonic()
            seen.changed.set()

    return on


async def until(
    seen: Seen,
    done: Callable[[], bool],
    what: str,
    limit: float,
    check: Callable[[], Awaitable[None]],
    every: float = 10.0,
) -> None:
    """Wait for ``done``; every ``every`` s ``check`` lists what the watches may have missed (a watch can break)."""
    deadline = time.monotonic() + limit
    checked = time.monotonic()
    while not done():
        seen.changed.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.changed.wait(), min(left, 1.0))
        if time.monotonic() - checked > every:
            await check()
            checked = time.monotonic()


async def in_parallel(items: list[Any], concurrency: int, send: Callable[[Any], Any]) -> dict[Any, float]:
    """Send every item with ``concurrency`` in flight; the monotonic time each was answered."""
    answered: dict[Any, float] = {}
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            for attempt in range(20):
                try:
                    await send(item)
                    break
                except ApiException as exc:
                    if exc.status not in (429, 500, 503, 504) or attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
            answered[item] = time.monotonic()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered


# -- the phases -----------------------------------------------------------------------------------------------


async def run_phases(
    plane: ControlPlane,
    operator: ChildProcess,
    security_log: Path,
    count: int,
    concurrency: int,
    limit: float,
    bindings_first: bool,
) -> dict[str, Any]:
    await config.load_kube_config(config_file=str(plane.kubeconfig))
    audit = Audit(plane.audit_log)
    names = [f"c{i:05d}" for i in range(count)]
    seen = Seen()
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        followers = [
            asyncio.create_task(follow(custom, "serviceaccountcredentials", credential_seen(seen))),
            asyncio.create_task(follow(custom, "rolebindings", binding_seen(seen))),
        ]
        await asyncio.sleep(1.0)

        async def check() -> None:
            for task in followers:
                if task.done() and task.exception() is not None:
                    print(f"a watch ended: {task.exception()!r}", flush=True)
            for plural, on in (
                ("serviceaccountcredentials", credential_seen(seen)),
                ("rolebindings", binding_seen(seen)),
            ):
                before = len(seen.ready) + len(seen.synced) + len(seen.rotated)
                listing = await custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
                for item in listing["items"]:
                    on(item)
                if (missed := len(seen.ready) + len(seen.synced) + len(seen.rotated) - before) > 0:
                    print(f"a listing of {plural} saw {missed} before the watch did (stamped then)", flush=True)

        pid = operator.pid
        assert pid is not None
        result: dict[str, Any] = {}

        # -- create ------------------------------------------------------------------------------------
        audit_at, log_at = audit.offset(), size(security_log)
        cpu_at = cpu_seconds(pid)
        start = time.monotonic()

        async def create(name: str) -> None:
            pair = [("serviceaccountcredentials", credential(name)), ("rolebindings", binding(name))]
            for plural, manifest in reversed(pair) if bindings_first else pair:
                await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, manifest)

        created = await in_parallel(names, concurrency, create)
        last_create = max(created.values())
        await until(
            seen,
            lambda: len(seen.ready) == count and len(seen.synced) == count,
            f"{count} credentials Ready and bindings Synced",
            limit,
            check,
            max(10.0, count / 100),
        )
        all_ready = max(max(seen.ready.values()), max(seen.synced.values()))
        lags = [max(seen.ready[n], seen.synced[f"{n}-roles"]) - created[n] for n in names]
        rss_peak_ready = memory_kib(pid)
        idle = await asyncio.to_thread(wait_idle, pid, all_ready)
        cpu = cpu_seconds(pid) - cpu_at
        mem = memory_kib(pid)
        requests = audit.summary(audit_at, None, count)
        result["create"] = {
            "create_seconds": round(last_create - start, 2),
            "first_create_to_all_ready_s": round(all_ready - start, 2),
            "last_create_to_all_ready_s": round(all_ready - last_create, 2),
            "create_to_ready_lag_s": percentiles(lags),
            "idle_after_all_ready_s": round(idle, 2),
            "requests": requests,
            "security_service_calls": service_calls(security_log, log_at),
            "operator_cpu_s": round(cpu, 2),
            "operator_cpu_ms_per_credential": round(1000 * cpu / count, 2),
            "rss_mib_at_all_ready": round(rss_peak_ready.get("VmRSS", 0) / 1024, 1),
            "rss_mib_peak": round(mem.get("VmHWM", 0) / 1024, 1),
            "rss_mib_idle": round(mem.get("VmRSS", 0) / 1024, 1),
        }
        print(json.dumps({"create": result["create"]}, indent=2), flush=True)

        # -- restart -----------------------------------------------------------------------------------
        await asyncio.to_thread(operator.stop)
        audit_at, log_at = audit.offset(), size(security_log)
        start = time.monotonic()
        await asyncio.to_thread(operator.start)
        pid = operator.pid
        assert pid is not None
        healthy = time.monotonic() - start
        idle = await asyncio.to_thread(wait_idle, pid, start)
        mem = memory_kib(pid)
        result["restart"] = {
            "healthy_s": round(healthy, 2),
            "start_to_idle_s": round(idle, 2),
            "requests": audit.summary(audit_at, None, count),
            "security_service_calls": service_calls(security_log, log_at),
            "operator_cpu_s_incl_startup": round(cpu_seconds(pid), 2),
            "rss_mib_peak": round(mem.get("VmHWM", 0) / 1024, 1),
        }
        print(json.dumps({"restart": result["restart"]}, indent=2), flush=True)

        # -- rotation sweep ----------------------------------------------------------------------------
        listing = await custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "serviceaccountcredentials")
        for obj in listing["items"]:
            seen.rotations[obj["metadata"]["name"]] = (obj.get("status") or {}).get("lastRotationTime") or "-"
        audit_at, log_at = audit.offset(), size(security_log)
        cpu_at = cpu_seconds(pid)
        start = time.monotonic()

        async def rotate(name: str) -> None:
            patch = {"metadata": {"annotations": {"credward.io/rotate": "sweep-1"}}}
            await custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                NAMESPACE,
                "serviceaccountcredentials",
                name,
                patch,
                _content_type="application/merge-patch+json",
            )

        await in_parallel(names, concurrency, rotate)
        last_annotation = time.monotonic()
        await until(
            seen, lambda: len(seen.rotated) == count, f"{count} rotations", limit, check, max(10.0, count / 100)
        )
        done = sorted(seen.rotated.values())
        idle = await asyncio.to_thread(wait_idle, pid, done[-1])
        cpu = cpu_seconds(pid) - cpu_at
        result["rotation"] = {
            "annotate_seconds": round(last_annotation - start, 2),
            "first_annotation_to_last_rotation_s": round(done[-1] - start, 2),
            "spread_first_to_last_rotation_s": round(done[-1] - done[0], 2),
            "idle_after_last_rotation_s": round(idle, 2),
            "requests": audit.summary(audit_at, None, count),
            "security_service_calls": service_calls(security_log, log_at),
            "operator_cpu_ms_per_credential": round(1000 * cpu / count, 2),
            "rss_mib_peak": round(memory_kib(pid).get("VmHWM", 0) / 1024, 1),
        }
        print(json.dumps({"rotation": result["rotation"]}, indent=2), flush=True)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return result


def run(
    count: int, concurrency: int, timeout: float, state: Path, operator_env: dict[str, str], bindings_first: bool
) -> dict[str, Any]:
    busy0, total0 = machine_busy()
    load0 = os.getloadavg()
    wall0 = time.monotonic()
    with ControlPlane(state / "controlplane", controller_manager=False, audit_reads_of=[OPERATOR_USER]) as plane:
        plane.install_crds(REPO / "crds")
        plane.kubectl("create", "namespace", NAMESPACE)
        port = free_port()
        security_log = state / "logs" / "security.log"
        security, token_file, hash_key = security_process(state, port, log_path=security_log)
        operator = operator_process(
            plane,
            security_base_url=f"http://127.0.0.1:{port}",
            hash_key_file=hash_key,
            token_file=token_file,
            log_path=state / "logs" / "operator.log",
            env=operator_env,
        )
        with security, operator:
            result = asyncio.run(run_phases(plane, operator, security_log, count, concurrency, timeout, bindings_first))
            operator_log = (state / "logs" / "operator.log").read_text(errors="replace")
    busy1, total1 = machine_busy()
    load1 = os.getloadavg()
    cores = os.cpu_count() or 1
    return {
        "count": count,
        "concurrency": concurrency,
        "created_first": "RoleBinding" if bindings_first else "ServiceAccountCredential",
        "operator_env": operator_env,
        **result,
        "operator_log": {
            "errors": operator_log.count(" ERROR "),
            "warnings": operator_log.count(" WARNING "),
            "tracebacks": operator_log.count("Traceback"),
        },
        "machine": {
            "cores": cores,
            "loadavg_1m_start_end": [round(load0[0], 2), round(load1[0], 2)],
            "machine_cpu_busy_share": round((busy1 - busy0) / max(total1 - total0, 1e-9), 3),
            "wall_s": round(time.monotonic() - wall0, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="create requests in flight")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds each phase may take")
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="a CREDWARD_* setting of the operator"
    )
    parser.add_argument(
        "--bindings-first", action="store_true", help="create each RoleBinding before its credential (not after)"
    )
    parser.add_argument("--out", type=Path, help="write the result here (default: print only)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.operator_env)
    with tempfile.TemporaryDirectory(prefix="credward-bench-") as tmp:
        result = run(args.count, args.concurrency, args.timeout, Path(tmp), env, args.bindings_first)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
        out[str(args.count)] = result
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

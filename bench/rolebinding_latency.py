"""How long a RoleBinding change takes to reach the token endpoint.

    python -m bench.rolebinding_latency [--changes 50] [--out bench/rolebinding_latency.json]

On a local control plane, with the real security service (SQLite) and the
real operator, one credential is made Ready; then, ``--changes`` times, one
RoleBinding is changed with ``kubectl apply`` to grant a new path, and a
client polls the token endpoint (client-credentials grant, keep-alive) until
a token carries that path's scope. Two latencies per change:

- ``applied``: from ``kubectl apply`` returning (the API server has the change)
  to the first token with the new scope — what the operator and service add;
- ``kubectl``: the same from just before ``kubectl`` starts (its own start-up included).

Reported as p50/p90/p99/max in milliseconds. The poller's own request time
(a few ms) bounds the resolution.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stack import local_stack, wait_for
from credward.devcluster import ControlPlane

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def _apply(plane: ControlPlane, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest))


def _wait(check: Any, what: str, timeout: float = 60) -> Any:
    return wait_for(check, what, timeout, interval=0.1)


def run(changes: int, state: Path) -> dict[str, Any]:
    with local_stack(state) as (plane, base_url):
        plane.kubectl("create", "namespace", NAMESPACE)
        _apply(
            plane,
            {
                "apiVersion": "credward.io/v1alpha1",
                "kind": "ServiceAccountCredential",
                "metadata": {"name": "bench"},
                "spec": {"displayName": "latency benchmark"},
            },
        )

        def ready() -> bool:
            out = plane.kubectl("get", "sac", "bench", "-n", NAMESPACE, "-o", "json", check=False)
            if out.returncode != 0:
                return False
            conds = {c["type"]: c["status"] for c in json.loads(out.stdout).get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        _wait(ready, "the credential to be Ready")
        secret = json.loads(plane.kubectl("get", "secret", "bench-credentials", "-n", NAMESPACE, "-o", "json").stdout)
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        applied: list[float] = []
        total: list[float] = []
        with httpx.Client(base_url=base_url, auth=(data["client-id"], data["client-secret"])) as http:

            def scope_has(path: str) -> bool:
                response = http.post("/oauth2/token", data={"grant_type": "client_credentials"})
                return response.status_code == 200 and path in response.json().get("scope", "")

            for i in range(changes):
                path = f"/bench/p{i}"
                binding = {
                    "apiVersion": "credward.io/v1alpha1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "bench"},
                    "spec": {
                        "serviceAccount": "bench",
                        "permissions": [{"verbs": ["read"], "path": ["bench", f"p{i}"]}],
                    },
                }
                start = time.perf_counter()
                _apply(plane, binding)
                done = time.perf_counter()
                deadline = done + 30
                while not scope_has(f":{path}"):
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"change {i} never reached the token endpoint")
                seen = time.perf_counter()
                applied.append((seen - done) * 1000)
                total.append((seen - start) * 1000)
    return {
        "changes": changes,
        "applied_to_token_ms": _percentiles(applied),
        "kubectl_to_token_ms": _percentiles(total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="credward-bench-") as tmp:
        result = run(args.changes, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""How long a revocation takes to reach the token endpoint and a validator that follows the feed.

    python -m bench.revocation [--revocations 40] [--out bench/revocation.json]

On a local control plane, with the real security service (SQLite), the real operator and the real API server,
``2 x --revocations`` credentials are made Ready. Each gets a live token, verified (and so cached) by one
``credward.client.TokenValidator`` that follows the revocation feed. Then, one at a time, half of them are
revoked with ``kubectl patch ... spec.revoked=true`` and the other half deleted with ``kubectl delete
--wait=false``; from the moment ``kubectl`` returns (the API server has the change), the bench polls, in turn,

- the token endpoint with the credential's secret, until it answers 401 — goal: p99 <= 2 s;
- ``validator.verify(live token)``, until it raises ``InvalidToken(check=revoked)`` — goal: p99 <= 5 s.

Reported as p50/p90/p99/max in milliseconds, per path and for both together. The polling loop's own time
(one token request, a few ms) bounds the resolution. Each revocation polls from its own loopback source
address, so the service's per-address throttle of failed requests never answers 429 in place of the 401.
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
from credward.client import Check, InvalidToken, TokenValidator
from credward.devcluster import ControlPlane

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
AUDIENCE = "https://storage.bench"
GOALS_MS = {"token_endpoint": 2000.0, "validator": 5000.0}


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


def _wait(check: Any, what: str, timeout: float = 120) -> Any:
    return wait_for(check, what, timeout, interval=0.2)


def _credential(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "credward.io/v1alpha1",
        "kind": "ServiceAccountCredential",
        "metadata": {"name": name},
        "spec": {"displayName": "revocation benchmark", "audiences": [AUDIENCE]},
    }


def _all_ready(plane: ControlPlane, count: int) -> bool:
    items = json.loads(plane.kubectl("get", "sac", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    ready = sum(
        1
        for item in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in item.get("status", {}).get("conditions", []))
    )
    return ready == count


def _secrets(plane: ControlPlane) -> dict[str, dict[str, str]]:
    items = json.loads(plane.kubectl("get", "secret", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name = item["metadata"]["name"]
        if name.endswith("-credentials"):
            out[name.removesuffix("-credentials")] = {k: base64.b64decode(v).decode() for k, v in item["data"].items()}
    return out


def _revoked(validator: TokenValidator, token: str) -> bool:
    try:
        validator.verify(token)
    except InvalidToken as exc:
        return exc.check == Check.REVOKED
    return False


def _from_address(base_url: str, i: int) -> httpx.Client:
    """A client on its own loopback source address (127.1.x.y), one per revocation.

    Each revocation ends with a refused token request, and the service throttles an address after 50 refusals
    a minute (a 429 instead of the 401 being waited for); a workload sees one refusal, not sixty.
    """
    address = f"127.{1 + i // 250}.{i % 250 + 1}.1"
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=address))


def run(revocations: int, state: Path) -> dict[str, Any]:
    with local_stack(state) as (plane, base_url):
        plane.kubectl("create", "namespace", NAMESPACE)
        names = [f"r{i:03d}" for i in range(2 * revocations)]
        manifests = {"apiVersion": "v1", "kind": "List", "items": [_credential(n) for n in names]}
        plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifests))
        _wait(lambda: _all_ready(plane, len(names)), "every credential Ready")
        secrets = _secrets(plane)
        latencies: dict[str, dict[str, list[float]]] = {
            how: {"token_endpoint": [], "validator": []} for how in ("revoked", "deleted")
        }
        with (
            httpx.Client(base_url=base_url) as http,
            TokenValidator(base_url, audience=AUDIENCE) as validator,
        ):
            validator.follow_revocations()
            _wait(lambda: validator.revocation_feed.lost_since is None, "the validator to reach the feed")

            def token(data: dict[str, str], client: httpx.Client = http) -> httpx.Response:
                auth = (data["client-id"], data["client-secret"])
                return client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth)

            live = {n: token(secrets[n]).json()["access_token"] for n in names}
            for n in names:
                validator.verify(live[n])  # accepted and cached before the revocation
            for i, n in enumerate(names):
                how = "revoked" if i % 2 == 0 else "deleted"
                if how == "revoked":
                    patch = json.dumps({"spec": {"revoked": True}})
                    plane.kubectl("patch", "sac", n, "-n", NAMESPACE, "--type=merge", "-p", patch)
                else:
                    plane.kubectl("delete", "sac", n, "-n", NAMESPACE, "--wait=false")
                start = time.perf_counter()
                endpoint_at: float | None = None
                validator_at: float | None = None
                with _from_address(base_url, i) as poller:
                    while endpoint_at is None or validator_at is None:
                        now = time.perf_counter()
                        if now - start > 60:
                            raise TimeoutError(f"revocation {i} ({how}) did not arrive within 60 s")
                        if endpoint_at is None:
                            status = token(secrets[n], poller).status_code
                            if status == 401:
                                endpoint_at = time.perf_counter()
                            elif status != 200:
                                raise RuntimeError(f"revocation {i}: the token endpoint answered {status}")
                        if validator_at is None and _revoked(validator, live[n]):
                            validator_at = time.perf_counter()
                latencies[how]["token_endpoint"].append((endpoint_at - start) * 1000)
                latencies[how]["validator"].append((validator_at - start) * 1000)
    result: dict[str, Any] = {"revocations": 2 * revocations, "goals_p99_ms": GOALS_MS}
    for path in ("token_endpoint", "validator"):
        both = latencies["revoked"][path] + latencies["deleted"][path]
        result[f"{path}_ms"] = {
            "all": _percentiles(both),
            "spec_revoked": _percentiles(latencies["revoked"][path]),
            "deleted": _percentiles(latencies["deleted"][path]),
        }
        result[f"{path}_meets_goal"] = _percentiles(both)["p99"] <= GOALS_MS[path]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--revocations", type=int, default=40, help="per kind (spec.revoked and deletion)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "revocation.json")
    parser.add_argument("--state", type=Path, help="keep the control plane's and the services' files (logs) here")
    args = parser.parse_args()
    if args.state is not None:
        result = run(args.revocations, args.state)
    else:
        with tempfile.TemporaryDirectory(prefix="credward-bench-") as tmp:
            result = run(args.revocations, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

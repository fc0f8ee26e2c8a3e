"""Benchmark of ``credward.client.TokenValidator`` against the raw ES256 verify rate and PyJWT's own decode.

    python -m bench.validator [--tokens 20000] [--rounds 5] [--out bench/validator.json]

One process pinned to one CPU, no I/O (the keys are given as a JWKS, as the
validator holds them after discovery). Each round measures, on the same
freshly signed credward-shaped tokens (``credward.domain.claims``, ES256,
``typ`` ``at+jwt``, a ``kid``):

1. **raw verify**: ``public_key.verify(der_signature, signing_input, ECDSA(SHA256()))``
   with plain ``cryptography``: the floor of any ES256 validator;
2. **PyJWT decode**: ``jwt.decode`` with the key, ``algorithms=["ES256"]``,
   ``audience``, ``issuer``, leeway and the same required claims;
3. **uncached**: ``TokenValidator.verify`` on tokens it has never seen (a
   fresh validator per round; every call is a cache miss plus the insert);
4. **cached**: ``TokenValidator.verify`` on tokens it has already verified.

Rates are per CPU-second of the measuring thread (robust against other load on
a shared machine) and per wall second; ratios are taken within each round and
the median round is reported. Goals (issue 6): uncached >= 0.8 x PyJWT decode;
cached >= 100,000 verifications/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cryptography
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm

from credward.client import TokenValidator
from credward.client.validator import REQUIRED_CLAIMS
from credward.domain.claims import build_claims
from credward.domain.scopes import Scope, ScopeProfile

HERE = Path(__file__).resolve().parent
GOAL_UNCACHED_VS_PYJWT = 0.8
GOAL_CACHED_PER_S = 100_000
ISSUER = "https://credward-security.credward.svc:9000"
AUDIENCE = "https://storage.example"
LEEWAY = 30.0
CACHED_SET = 1000


def make_tokens(key: ec.EllipticCurvePrivateKey, kid: str, count: int) -> list[str]:
    now = int(time.time())
    scopes = (Scope("storage.read", ("store", "artifacts")), Scope("storage.modify", ("store", "builds")))
    out = []
    for n in range(count):
        grant = build_claims(
            profile=ScopeProfile.WLCG,
            issuer=ISSUER,
            subject="7d3f0c5e-2b1a-4c9e-9f7d-1a2b3c4d5e6f@clients.credward-security.credward.svc",
            client_id="7d3f0c5e-2b1a-4c9e-9f7d-1a2b3c4d5e6f",
            audience=AUDIENCE,
            scopes=scopes,
            roles=("builder",),
            groups=("/ci/builders", "/ci"),
            now=now,
            lifetime=3600,
            jti=f"bench-{n:08d}",
        )
        out.append(jwt.encode(grant.claims, key, algorithm="ES256", headers={"typ": "at+jwt", "kid": kid}))
    return out


def raw_inputs(tokens: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """(signing input, DER signature) of each token: what a bare ES256 verify needs."""
    out = []
    for token in tokens:
        signing_input, _, sig_b64 = token.rpartition(".")
        raw = jwt.utils.base64url_decode(sig_b64)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        out.append((signing_input.encode(), der))
    return out


def timed(run: Callable[[], int]) -> dict[str, float]:
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    n = run()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    return {"per_s": n / wall, "per_cpu_s": n / cpu}


def one_round(key: ec.EllipticCurvePrivateKey, jwks: dict[str, Any], tokens: list[str]) -> dict[str, dict[str, float]]:
    public = key.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())
    inputs = raw_inputs(tokens)
    options: jwt.types.Options = {"require": list(REQUIRED_CLAIMS)}

    def raw() -> int:
        for data, der in inputs:
            public.verify(der, data, algorithm)
        return len(inputs)

    def pyjwt() -> int:
        for token in tokens:
            jwt.decode(
                token, public, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY, options=options
            )
        return len(tokens)

    fresh = TokenValidator(ISSUER, audience=AUDIENCE, jwks=jwks, leeway=LEEWAY)

    def uncached() -> int:
        for token in tokens:
            fresh.verify(token)
        return len(tokens)

    warm = TokenValidator(ISSUER, audience=AUDIENCE, jwks=jwks, leeway=LEEWAY)
    hot = tokens[:CACHED_SET]
    for token in hot:
        warm.verify(token)
    repeat = max(1, 20 * len(tokens) // len(hot))

    def cached() -> int:
        verify = warm.verify
        for _ in range(repeat):
            for token in hot:
                verify(token)
        return repeat * len(hot)

    return {
        "raw_verify": timed(raw),
        "pyjwt_decode": timed(pyjwt),
        "uncached": timed(uncached),
        "cached": timed(cached),
    }


def median_of(rounds: list[dict[str, dict[str, float]]], name: str, unit: str) -> int:
    return round(statistics.median(r[name][unit] for r in rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="distinct tokens per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "validator.json")
    args = parser.parse_args(argv)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    load_at_start = os.getloadavg()
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "ES256", "use": "sig"}
    jwks = {"keys": [jwk]}
    print(f"signing {args.tokens} tokens ...", flush=True)
    tokens = make_tokens(key, "bench", args.tokens)
    rounds = []
    for n in range(args.rounds):
        result = one_round(key, jwks, tokens)
        rounds.append(result)
        print(f"round {n + 1}: " + ", ".join(f"{k} {v['per_cpu_s']:.0f}/cpu-s" for k, v in result.items()), flush=True)

    def ratio(name: str, base: str) -> float:
        return round(statistics.median(r[name]["per_cpu_s"] / r[base]["per_cpu_s"] for r in rounds), 3)

    summary = {
        name: {"per_cpu_s": median_of(rounds, name, "per_cpu_s"), "per_s": median_of(rounds, name, "per_s")}
        for name in ("raw_verify", "pyjwt_decode", "uncached", "cached")
    }
    ratios = {
        "uncached_vs_raw_verify": ratio("uncached", "raw_verify"),
        "uncached_vs_pyjwt_decode": ratio("uncached", "pyjwt_decode"),
        "cached_vs_raw_verify": ratio("cached", "raw_verify"),
        "cached_vs_pyjwt_decode": ratio("cached", "pyjwt_decode"),
        "pyjwt_decode_vs_raw_verify": ratio("pyjwt_decode", "raw_verify"),
    }
    results = {
        "benchmark": "credward.client.TokenValidator.verify (ES256), one core, in process",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {
            "cpu": cpu,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "pyjwt": jwt.__version__,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "tokens_per_round": args.tokens,
        "rounds": args.rounds,
        "median": summary,
        "ratios_per_cpu_second": ratios,
        "goals": {
            "uncached_vs_pyjwt_at_least": GOAL_UNCACHED_VS_PYJWT,
            "uncached_met": ratios["uncached_vs_pyjwt_decode"] >= GOAL_UNCACHED_VS_PYJWT,
            "cached_per_s_at_least": GOAL_CACHED_PER_S,
            "cached_met": summary["cached"]["per_cpu_s"] >= GOAL_CACHED_PER_S,
        },
        "all_rounds": rounds,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nraw ES256 verify {summary['raw_verify']['per_cpu_s']}/s, "
        f"PyJWT decode {summary['pyjwt_decode']['per_cpu_s']}/s, "
        f"validator uncached {summary['uncached']['per_cpu_s']}/s "
        f"({ratios['uncached_vs_pyjwt_decode']:.2f}x PyJWT, {ratios['uncached_vs_raw_verify']:.2f}x raw), "
        f"cached {summary['cached']['per_cpu_s']}/s ({ratios['cached_vs_raw_verify']:.1f}x raw) "
        f"[per CPU-second, median of {args.rounds} rounds] -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

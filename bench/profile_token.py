"""Where one token request's CPU time goes, without HTTP: ``OAuthService.token`` in a loop under cProfile.

    python -m bench.profile_token [--requests 20000] [--top 25]

Prints the per-request time of the whole call and of the raw ES256 signature
alone, what credward's limits layer (:mod:`credward.security.limits`) adds to
one ASGI request, then the cProfile table (by own time) of the token path.
What the HTTP server itself costs is measured by ``bench.token_endpoint``
(its ``http_floor_healthz``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import pstats
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from credward.api.admin import RoleMapping, SecretHash
from credward.api.models import Permission
from credward.domain.secrets import hash_secret, new_client_id, new_client_secret
from credward.security.adminauth import BearerFileAuthenticator
from credward.security.app import build_services
from credward.security.limits import HttpLimits, LimitedApp, Message, Receive, Scope, Send
from credward.security.model import Account
from credward.security.service import OAuthService
from credward.security.settings import AdminAuthMode, Settings
from credward.security.store.sqlite import SQLiteStore


async def setup(tmp: Path) -> tuple[OAuthService, bytes, bytes]:
    (tmp / "admin-token").write_text("x" * 32)
    hash_key = secrets.token_hex(32).encode()
    settings = Settings(
        issuer="http://127.0.0.1:9000",
        store_url=f"sqlite:///{tmp / 'store.db'}",
        hash_key_file=tmp / "hash.key",
        keys_dir=tmp / "keys",
        admin_auth=AdminAuthMode.BEARER_FILE,
        admin_token_file=tmp / "admin-token",
        dev_mode=True,
    )
    store = SQLiteStore(tmp / "store.db")
    await store.migrate()
    services = build_services(settings, store, BearerFileAuthenticator(tmp / "admin-token"), hash_key)
    client_id, secret = new_client_id(), new_client_secret()
    await store.put_account(
        Account(
            client_id=client_id,
            identity=f"{client_id}@clients.127.0.0.1",
            audiences=("https://storage.example",),
            groups=("/bench/prod", "/bench"),
            secrets=(SecretHash(id="s1", hash=hash_secret(hash_key, secret)),),
            role_mappings=(
                RoleMapping(name="rb", roles=("reader",), permissions=(Permission(verbs=("read",), path=("data",)),)),
            ),
            updated_at=datetime.now(UTC),
        )
    )
    oauth = services.oauth
    oauth.accounts._ttl = 1e9  # keep the account cached for the whole profile
    await oauth.accounts.get(client_id)
    auth = b"Basic " + base64.b64encode(f"{client_id}:{secret}".encode())
    return oauth, b"grant_type=client_credentials", auth


async def layer_cost(n: int) -> tuple[float, float]:
    """Microseconds per request of a trivial ASGI app, bare and under the limits layer (in-memory receive/send)."""
    body: Message = {"type": "http.request", "body": b"grant_type=client_credentials", "more_body": False}
    scope: Scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/oauth2/token",
        "raw_path": b"/oauth2/token",
        "headers": [(b"host", b"x"), (b"content-length", b"29"), (b"authorization", b"Basic eA==")],
    }

    async def receive() -> Message:
        return body

    async def send(message: Message) -> None:
        return None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    timings = []
    for target in (app, LimitedApp(app, HttpLimits())):
        t0 = time.perf_counter()
        for _ in range(n):
            await target(scope, receive, send)
        timings.append((time.perf_counter() - t0) / n * 1e6)
    return timings[0], timings[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="credward-profile-") as tmp:

        async def run() -> None:
            oauth, body, auth = await setup(Path(tmp))
            form = b"application/x-www-form-urlencoded"

            async def read_body() -> bytes:
                return body

            async def loop(n: int) -> None:
                for _ in range(n):
                    await oauth.token(form, auth, "127.0.0.1", read_body)

            issued = await oauth.token(form, auth, "127.0.0.1", read_body)
            assert issued.access_token.count(b".") == 2, issued
            n = args.requests
            t0 = time.perf_counter()
            await loop(n)
            per = (time.perf_counter() - t0) / n * 1e6
            signer = oauth.keyring.keyset.signer
            t0 = time.perf_counter()
            for _ in range(n):
                signer._sign(b"e" * 420)
            sign = (time.perf_counter() - t0) / n * 1e6
            print(f"token: {per:.1f} us per token; signature alone: {sign:.1f} us; the rest: {per - sign:.1f} us")
            bare, limited = await layer_cost(n)
            print(
                f"limits layer: {limited - bare:.1f} us per request "
                f"(trivial ASGI app {bare:.1f} us, under the layer {limited:.1f} us)"
            )
            profile = cProfile.Profile()
            profile.enable()
            await loop(n)
            profile.disable()
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)
            await oauth.store.close()

        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

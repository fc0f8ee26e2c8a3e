"""Fixtures for the security service's unit tests: a real SQLite store in a temp dir (no in-memory stand-in
that could disagree with the real stores), settings in that dir, a clock moved by hand, and the app.

The app is driven in-process over httpx's ASGI transport, or with :func:`asgi` where a test must see
exactly what the app reads and sends (raw paths, whether the body was read)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from credward.api.admin import RoleMapping, SecretHash
from credward.api.models import Permission
from credward.domain.secrets import hash_secret, new_client_id, new_client_secret
from credward.security.adminauth import BearerFileAuthenticator
from credward.security.app import CredwardApp, Services, build_services, create_app
from credward.security.model import Account
from credward.security.settings import AdminAuthMode, Settings
from credward.security.store.sqlite import SQLiteStore

HASH_KEY = b"k" * 32
ADMIN_TOKEN = "unit-admin-token-0123456789"
ISSUER = "https://issuer.test"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Client:
    client_id: str
    secret: str


def make_settings(tmp_path: Path, **changes: Any) -> Settings:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "store_url": f"sqlite:///{tmp_path / 'store.db'}",
        "hash_key_file": tmp_path / "hash-key",
        "keys_dir": tmp_path / "keys",
        "admin_auth": AdminAuthMode.BEARER_FILE,
        "admin_token_file": token_file,
        "dev_mode": True,
        "throttle_client_failures": 3,
        "throttle_ip_failures": 5,
        **changes,
    }
    return Settings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A migrated SQLite store in this test's temp dir (the default backend, the real one)."""
    opened = SQLiteStore(tmp_path / "store.db")
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def _authenticator(settings: Settings) -> BearerFileAuthenticator:
    assert settings.admin_token_file is not None
    return BearerFileAuthenticator(settings.admin_token_file)


@pytest.fixture
def services(settings: Settings, store: SQLiteStore, clock: FakeClock) -> Services:
    """The services the app's endpoints call, for tests of one service at a time."""
    return build_services(settings, store, _authenticator(settings), HASH_KEY, clock)


@asynccontextmanager
async def running(app: CredwardApp) -> AsyncIterator[CredwardApp]:
    """The app between its ASGI lifespan startup and shutdown, as a server runs it (httpx's transport runs none)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, send))  # type: ignore[arg-type]
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield app
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


@pytest.fixture
async def app(settings: Settings, store: SQLiteStore, clock: FakeClock) -> AsyncIterator[CredwardApp]:
    async with running(create_app(settings, store, _authenticator(settings), HASH_KEY, clock)) as started:
        yield started


@pytest.fixture
async def http(app: CredwardApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as client:
        yield client


DEFAULT_MAPPINGS = (
    RoleMapping(
        name="rb",
        roles=("reader", "writer"),
        permissions=(
            Permission(verbs=("read",), path=("data",)),
            Permission(verbs=("write",), path=("data", "out")),
        ),
    ),
)


@pytest.fixture
def add_client(store: SQLiteStore) -> Callable[..., Awaitable[Client]]:
    """Put an active account holding read:/data and write:/data/out into the store."""

    async def add(
        *,
        audiences: tuple[str, ...] = ("https://storage.test",),
        ttl: int = 300,
        groups: tuple[str, ...] = ("/cms/prod", "/cms"),
        expires_at: datetime | None = None,
        not_after: datetime | None = None,
        mappings: tuple[RoleMapping, ...] = DEFAULT_MAPPINGS,
    ) -> Client:
        client_id, secret = new_client_id(), new_client_secret()
        account = Account(
            client_id=client_id,
            identity=f"{client_id}@clients.issuer.test",
            audiences=audiences,
            token_ttl_seconds=ttl,
            groups=groups,
            expires_at=expires_at,
            secrets=(SecretHash(id="s1", hash=hash_secret(HASH_KEY, secret), not_after=not_after),),
        )
        await store.put_account(account)
        await store.set_role_mappings(client_id, mappings)
        return Client(client_id, secret)

    return add


@dataclass
class Exchange:
    """What one request did inside the app: the answer, and how often it asked for the body."""

    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    receives: int = 0


async def asgi(
    app: CredwardApp,
    method: str,
    path: str,
    *,
    raw_path: bytes | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    body: bytes = b"",
) -> Exchange:
    """One HTTP request straight into the ASGI app, as a server would hand it over."""
    seen = Exchange()

    async def receive() -> dict[str, Any]:
        seen.receives += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.status = message["status"]
            seen.headers = dict(message.get("headers", []))
        elif message["type"] == "http.response.body":
            seen.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode() if raw_path is None else raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"issuer.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 443),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return seen

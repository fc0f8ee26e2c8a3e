"""The real security service over real HTTP: ``credward security serve`` as a subprocess on a free loopback port.

``service`` is one running service per backend (SQLite file, real PostgreSQL)
shared by a module's tests; each test registers its own accounts with fresh
client ids. ``start_service`` starts a dedicated one with overridden flags,
for tests that change keys, throttling or admin authentication.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import BACKENDS, sqlite_url
from tests.support.postgres import PostgresServer

from credward.domain.secrets import hash_secret, new_client_id, new_client_secret, new_secret_id

START_TIMEOUT = 30.0
DEFAULT_PERMISSIONS = [{"verbs": ["read"], "path": ["data"]}, {"verbs": ["write"], "path": ["data", "out"]}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Registered:
    """An account registered through the admin API, with its secret value (kept only in the test)."""

    client_id: str
    secret: str
    secret_id: str


@dataclass
class Service:
    base_url: str
    admin_token: str
    hash_key: bytes
    keys_dir: Path
    stdout_path: Path
    stderr_path: Path
    process: subprocess.Popen[bytes]
    secrets_seen: list[str] = field(default_factory=list)

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth2/token"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def put_account(self, client_id: str, body: dict[str, Any]) -> httpx.Response:
        with self.http() as http:
            return http.put(f"/v1/admin/accounts/{client_id}", json=body, headers=self.admin_headers())

    def register(
        self,
        *,
        audiences: tuple[str, ...] = ("https://storage.example",),
        groups: tuple[str, ...] = ("/atlas/prod", "/atlas"),
        ttl: int = 300,
        expires_at: datetime | None = None,
        roles: tuple[str, ...] = ("reader",),
        permissions: list[dict[str, Any]] | None = None,
        client_id: str | None = None,
    ) -> Registered:
        """Create an account with one secret and one role mapping, as the operator would."""
        client_id, secret, secret_id = client_id or new_client_id(), new_client_secret(), new_secret_id()
        self.secrets_seen.append(secret)
        body: dict[str, Any] = {
            "displayName": "integration test",
            "audiences": list(audiences),
            "groups": list(groups),
            "tokenTTLSeconds": ttl,
            "secrets": [{"id": secret_id, "hash": hash_secret(self.hash_key, secret)}],
        }
        if expires_at is not None:
            body["expiresAt"] = expires_at.isoformat()
        response = self.put_account(client_id, body)
        assert response.status_code == 201, response.text
        mappings = {
            "mappings": [{"name": "rb", "roles": list(roles), "permissions": permissions or DEFAULT_PERMISSIONS}]
        }
        with self.http() as http:
            r = http.put(f"/v1/admin/accounts/{client_id}/role-mappings", json=mappings, headers=self.admin_headers())
        assert r.status_code == 200, r.text
        return Registered(client_id, secret, secret_id)

    def token(self, client: Registered, **form: str) -> httpx.Response:
        with self.http() as http:
            return http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials", **form},
                auth=(client.client_id, client.secret),
            )

    def logs(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def audit_lines(self) -> list[str]:
        return [line for line in self.stdout_path.read_text().splitlines() if line.startswith("{")]


def _wait_ready(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"security service exited early:\n{service.logs()[-3000:]}")
        try:
            if httpx.get(service.base_url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"security service not ready after {START_TIMEOUT}s:\n{service.logs()[-3000:]}")


def stop_service(service: Service) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


StartService = Callable[..., Service]


def starter(tmp: Path, store_url: str, started: list[Service]) -> StartService:
    def start(keys_dir: Path | None = None, **flags: str) -> Service:
        n = len(started)
        port = free_port()
        base = tmp / f"svc{n}"
        base.mkdir(parents=True, exist_ok=True)
        admin_token = secrets.token_urlsafe(32)
        (base / "admin-token").write_text(admin_token)
        hash_key = secrets.token_hex(32).encode()
        (base / "hash.key").write_bytes(hash_key)
        keys = keys_dir or base / "keys"
        options = {
            "issuer": f"http://127.0.0.1:{port}",
            "port": str(port),
            "store-url": store_url,
            "keys-dir": str(keys),
            "hash-key-file": str(base / "hash.key"),
            "dev-mode": "true",
            "admin-auth": "bearer-file",
            "admin-token-file": str(base / "admin-token"),
            "key-reload-interval": "0.2",
            "throttle-ip-failures": "1000",
            **{k.replace("_", "-"): v for k, v in flags.items()},
        }
        stdout, stderr = base / "stdout.log", base / "stderr.log"
        cmd = [sys.executable, "-m", "credward.cli", "security", "serve", *(f"--{k}={v}" for k, v in options.items())]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDWARD_SECURITY_")}
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        service = Service(options["issuer"], admin_token, hash_key, keys, stdout, stderr, process)
        started.append(service)
        _wait_ready(service)
        return service

    return start


def _store_url_for(request: pytest.FixtureRequest, backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp / "store.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database("svc")


@pytest.fixture(scope="module", params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh database for this module, once per backend."""
    return _store_url_for(request, str(request.param), tmp_path_factory.mktemp(f"store-{request.param}"))


@pytest.fixture(scope="module")
def service(backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One running service per backend for the module."""
    started: list[Service] = []
    svc = starter(tmp_path_factory.mktemp("service"), backend_url, started)()
    try:
        yield svc
    finally:
        for s in started:
            stop_service(s)


@pytest.fixture
def start_service(backend_url: str, tmp_path: Path) -> Iterator[StartService]:
    """Start dedicated services (on this module's backend) with overridden flags; all stopped after the test."""
    started: list[Service] = []
    try:
        yield starter(tmp_path, backend_url, started)
    finally:
        for s in started:
            stop_service(s)

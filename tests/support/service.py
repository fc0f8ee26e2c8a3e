"""The real security service for operator tests: ``credward security serve`` on loopback with a SQLite file.

Tests stop it, start it again on the same port (so the operator's URL stays
right) and wipe its store, to check that the operator loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from credward.devcluster.plane import free_port
from credward.devcluster.processes import ChildProcess, security_process


class SecurityServer:
    def __init__(
        self,
        state: Path,
        *,
        keys_dir: Path | None = None,
        hash_key_file: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process, self.token_file, self.hash_key_file = security_process(
            state,
            self.port,
            log_path=state / "security.log",
            keys_dir=keys_dir,
            hash_key_file=hash_key_file,
            extra_args=extra_args,
        )
        self.db = state / "security" / "credward.db"

    def __enter__(self) -> Self:
        self.process.start()
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        self.process.stop()

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        self.process.start()

    def wipe(self) -> None:
        """Stop the service and delete its SQLite store (WAL files too); ``start`` begins with an empty one."""
        self.process.stop()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)

    @property
    def hash_key(self) -> bytes:
        return self.hash_key_file.read_bytes().strip()

    def admin(self) -> httpx.Client:
        token = self.token_file.read_text().strip()
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def account(self, client_id: str) -> dict[str, Any] | None:
        """What the service holds for ``client_id`` (admin API), or None."""
        with self.admin() as http:
            resp = http.get(f"/v1/admin/accounts/{client_id}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def info(self) -> dict[str, Any]:
        with self.admin() as http:
            resp = http.get("/v1/admin/info")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def token(self, client_id: str, secret: str, **form: str) -> httpx.Response:
        """The client-credentials grant, as a workload runs it."""
        return httpx.post(
            f"{self.base_url}/oauth2/token",
            data={"grant_type": "client_credentials", **form},
            auth=(client_id, secret),
            timeout=10,
        )


__all__ = ["ChildProcess", "SecurityServer"]

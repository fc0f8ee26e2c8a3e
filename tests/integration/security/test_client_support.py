"""Helpers of the ``test_client_*`` modules (no tests here): a Secret mounted as the kubelet mounts it, and a
real resource server on loopback that checks tokens with ``credward.client.TokenValidator``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.security.conftest import Registered, Service

from credward.client import Check, InsufficientScope, InvalidToken, TokenValidator, bearer_token

SECRET_KEYS = ("client-id", "client-secret", "token-url", "issuer")
REFUSE_ALL = "/refuses-every-token"  # a path the resource server answers 401 whatever the token


class KubeletMount:
    """A Secret volume laid out exactly as the kubelet's atomic writer does it.

    ``<dir>/<key> -> ..data/<key>``, ``<dir>/..data -> ..<timestamp>``; an update
    writes a new timestamped directory, points a temporary ``..data_tmp`` link at
    it, renames that over ``..data`` (atomic) and removes the old directory.
    """

    def __init__(self, root: Path, values: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._serial = 0
        self._write(values)
        for key in values:
            os.symlink(f"..data/{key}", root / key)

    @property
    def secret_path(self) -> Path:
        return self.root / "client-secret"

    def _write(self, values: dict[str, str]) -> str:
        self._serial += 1
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{self._serial:09d}"
        version = self.root / stamp
        version.mkdir()
        for key, value in values.items():
            (version / key).write_text(value)
            (version / key).chmod(0o444)
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        os.rename(tmp, self.root / "..data")
        if old is not None:
            for child in (self.root / old).iterdir():
                child.unlink()
            (self.root / old).rmdir()
        return stamp

    def update(self, values: dict[str, str]) -> None:
        self._write(values)


def secret_values(service: Service, client: Registered, secret: str | None = None) -> dict[str, str]:
    """The keys of the Secret the operator writes for this account."""
    return {
        "client-id": client.client_id,
        "client-secret": secret or client.secret,
        "token-url": service.token_url,
        "issuer": service.base_url,
    }


def issued_jtis(service: Service, client_id: str) -> list[str]:
    """The ids of the tokens the service issued to ``client_id``, from its audit log."""
    out = []
    for line in service.audit_lines():
        record = json.loads(line)
        if (
            record.get("event") == "token"
            and record.get("outcome") == "issued"
            and record.get("client_id") == client_id
        ):
            out.append(str(record["jti"]))
    return out


def wait_until_revoked(validator: TokenValidator, token: str, timeout: float = 10.0) -> None:
    """Until the validator, following the feed, refuses ``token`` as revoked."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            validator.verify(token)
        except InvalidToken as exc:
            refused = exc
            break
        assert time.monotonic() < deadline, "the revocation did not reach the validator"
        time.sleep(0.05)
    assert refused.check is Check.REVOKED, refused


@dataclass
class ResourceServer:
    """A loopback HTTP server answering GET <path> if the bearer token may read it (RFC 6750 answers)."""

    url: str
    validator: TokenValidator
    seen: list[str] = field(default_factory=list)  # jti of every request that reached the check


def _handler(rs: ResourceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, body: bytes) -> None:
            if self.path == REFUSE_ALL:
                self._answer(401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
                return
            try:
                token = rs.validator.verify(bearer_token(self.headers.get("Authorization")))
                rs.seen.append(str(token.claims["jti"]))
                grant = token.require("read", self.path)
            except InvalidToken as exc:
                challenge = f'Bearer error="invalid_token", error_description="{exc.check.value}"'
                self._answer(401, {"error": exc.error, "check": exc.check.value}, {"WWW-Authenticate": challenge})
                return
            except InsufficientScope as exc:
                self._answer(403, {"error": exc.error, "check": exc.check.value, "reason": exc.reason})
                return
            answer = {"sub": token.subject, "jti": token.claims["jti"], "granted_by": grant.scope}
            self._answer(200, {**answer, "body": body.decode()})

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            self._serve(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    return Handler


@contextmanager
def resource_server(validator: TokenValidator) -> Iterator[ResourceServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ResourceServer("", validator)))
    rs = ResourceServer(f"http://127.0.0.1:{server.server_address[1]}", validator)
    server.RequestHandlerClass = _handler(rs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rs
    finally:
        server.shutdown()
        server.server_close()
        validator.close()

"""Start and stop a throwaway PostgreSQL server for tests: the real server binaries, no Docker, no mock.

The binaries come from the distribution's ``postgresql`` package; they are found
at run time (``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``).
``initdb`` and ``postgres`` refuse to run as root, so when the tests run as root
the server runs as the ``postgres`` system user (created by that package) in a
directory it owns. The server listens on a free loopback port with trust auth
and fsync off: it holds nothing worth keeping, and tests should be fast.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

SERVER_USER = "postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The test PostgreSQL could not be found, started or used; the message says which step and where the log is."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    searched = ", ".join(str(c) for c in candidates) or "nothing (no pg_config on PATH, no /usr/lib/postgresql/*/bin)"
    raise PostgresError(
        f"PostgreSQL server binaries (initdb, postgres) not found; searched {searched}. "
        "Install them with: apt-get install -y postgresql"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class PostgresServer:
    """One PostgreSQL server in a fresh temporary directory; use as a context manager."""

    base: Path = field(init=False)
    port: int = field(init=False, default=0)
    bindir: Path = field(default_factory=find_bindir)
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _db_counter: int = field(init=False, default=0)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _server_user(self) -> tuple[int, int] | None:
        """(uid, gid) of the ``postgres`` user when we are root and must drop to it; None otherwise."""
        if os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresError(
                f"running as root, and initdb/postgres refuse root, but there is no {SERVER_USER!r} user to run "
                "them as; the Debian package 'postgresql' creates it"
            ) from None
        return pw.pw_uid, pw.pw_gid

    def _run_as_server(self, cmd: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        ids = self._server_user()
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env(),
            user=None if ids is None else ids[0],
            group=None if ids is None else ids[1],
            extra_groups=None if ids is None else [],
        )

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def _prepare_base(self) -> None:
        # Not under pytest's tmp dir: that is private to root (0700) and the server user could not enter it.
        self.base = Path(tempfile.mkdtemp(prefix="credward-postgres-"))
        self.socket_dir.mkdir()
        self.log_path.touch()
        ids = self._server_user()
        if ids is not None:
            for path in (self.base, self.socket_dir, self.log_path):
                os.chown(path, *ids)

    def _initdb(self) -> None:
        cmd = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.datadir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]
        with self.log_path.open("ab") as log:
            code = self._run_as_server(cmd, log).wait()
        if code != 0:
            raise PostgresError(
                f"initdb failed (exit {code}) into {self.datadir}; log {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _launch(self) -> None:
        self.port = free_port()
        cmd = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        setpriv = shutil.which("setpriv")
        if setpriv:  # if pytest is killed outright, the kernel stops the server too (no stray postgres)
            cmd = [setpriv, "--pdeathsig", "INT", "--", *cmd]
        with self.log_path.open("ab") as log:
            self._proc = self._run_as_server(cmd, log)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with code {self._proc.returncode} while starting on 127.0.0.1:{self.port}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(
            f"postgres did not accept connections on 127.0.0.1:{self.port} within {START_TIMEOUT:.0f}s; "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def start(self) -> Self:
        self._prepare_base()
        try:
            self._initdb()
            for attempt in range(3):  # the free port may be taken between probing and binding
                self._launch()
                try:
                    self._wait_ready()
                    break
                except PostgresError:
                    self._terminate()
                    if attempt == 2 or "Address already in use" not in _tail(self.log_path):
                        raise
        except BaseException:
            self.stop(keep_files_on_error=True)
            raise
        return self

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(2)  # SIGINT: PostgreSQL's "fast" shutdown
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, keep_files_on_error: bool = False) -> None:
        """Stop the server; remove its directory unless we are failing (then the log stays for diagnosis)."""
        self._terminate()
        if not keep_files_on_error and hasattr(self, "base"):
            shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, prefix: str = "credward") -> str:
        """Create a new, empty database and return its DSN."""
        self._db_counter += 1
        name = f"{prefix}_{self._db_counter}"
        proc = subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name],
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if proc.returncode != 0:
            raise PostgresError(
                f"createdb {name} on 127.0.0.1:{self.port} failed: {proc.stderr.strip()}; server log {self.log_path}"
            )
        return self.dsn(name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()

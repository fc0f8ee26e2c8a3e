"""credward's own components as child processes of a development or test session.

The operator and the security service run exactly as in a cluster (``credward
operator run``, ``credward security serve``), only pointed at the local
control plane; tests stop and restart them to check what a restart does.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.plane import ControlPlane, _die_with_parent, free_port

OPERATOR_USER = "credward-operator"


class ChildProcess:
    """A credward subcommand in the background, ready once ``health_url`` answers 200."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        health_url: str,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "credward", *args]
        self.log_path = log_path
        self.health_url = health_url
        self.env = {**os.environ, **(env or {})}
        self.timeout = startup_timeout
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The running process's id (benchmarks read its CPU time and memory from /proc)."""
        return self._popen.pid if self.running and self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, *, wait_ready: bool = True) -> None:
        """Start it and (unless ``wait_ready`` is false) wait until ``health_url`` answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._popen = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        if not wait_ready:
            return
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            code = self._popen.poll()
            if code is not None:
                raise ControlPlaneError(f"{self.name} exited with code {code} while starting; log: {self.log_path}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ControlPlaneError(f"{self.name} was not healthy within {self.timeout:.0f}s; log: {self.log_path}")

    def kill(self) -> int:
        """SIGKILL, as a node failure or an OOM kill ends a process: no cleanup at all. Returns the exit code."""
        if self._popen is None:
            return 0
        if self._popen.poll() is None:
            self._popen.kill()
        code = self._popen.wait()
        self._popen = None
        return code

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once it has ended on its own within ``timeout`` seconds, else None (still running)."""
        if self._popen is None:
            return None
        try:
            code = self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._popen = None
        return code

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process has ended by itself, else None."""
        return None if self._popen is None else self._popen.poll()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful shutdown, as a kubelet does), SIGKILL after ``timeout``."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._popen = None


def operator_process(
    plane: ControlPlane,
    *,
    security_base_url: str,
    hash_key_file: Path,
    token_file: Path,
    log_path: Path,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    namespaces: Sequence[str] = (),
) -> ChildProcess:
    """``credward operator run`` as user ``credward-operator``, so the audit log tells its writes apart.

    ``hash_key_file`` is the security service's secret-hash key; ``token_file`` holds the bearer token
    of its admin API (``--admin-auth=bearer-file``). ``env`` adds ``CREDWARD_*`` settings. It watches
    ``namespaces`` only, or every namespace when none are given.
    """
    port = free_port()
    kubeconfig = plane.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    scope = [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
    return ChildProcess(
        "credward operator",
        ["operator", "run", *scope, f"--liveness-port={port}", *extra_args],
        log_path,
        f"http://127.0.0.1:{port}/healthz",
        env={
            "KUBECONFIG": str(kubeconfig),
            "CREDWARD_SECURITY_BASE_URL": security_base_url,
            "CREDWARD_HASH_KEY_FILE": str(hash_key_file),
            "CREDWARD_SECURITY_TOKEN_FILE": str(token_file),
            **(env or {}),
        },
    )


def security_process(
    state: Path,
    port: int,
    *,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    keys_dir: Path | None = None,
    hash_key_file: Path | None = None,
) -> tuple[ChildProcess, Path, Path]:
    """``credward security serve`` in dev mode on 127.0.0.1:``port``: SQLite store, admin API behind a bearer token.

    Everything lives under ``state/security`` (``credward.db``, ``keys/``, ``hash.key``, ``admin-token``);
    returns the process, the admin token file and the hash key file. Creates the token and the key (64 hex
    characters, as dev mode would) if missing, so the operator can be given both before the service starts.
    ``keys_dir`` and ``hash_key_file`` point it at mounted Secrets instead (and switch dev mode off: nothing
    is generated into a mount).
    """
    home = state / "security"
    home.mkdir(parents=True, exist_ok=True)
    admin_token, hash_key = home / "admin-token", hash_key_file or home / "hash.key"
    generated = [(admin_token, secrets.token_urlsafe(32))]
    if hash_key_file is None:
        generated.append((hash_key, secrets.token_hex(32)))
    for path, value in generated:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(value)
    proc = ChildProcess(
        "credward security",
        [
            "security",
            "serve",
            f"--issuer=http://127.0.0.1:{port}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--store-url=sqlite:///{home / 'credward.db'}",
            f"--keys-dir={keys_dir or home / 'keys'}",
            f"--hash-key-file={hash_key}",
            f"--dev-mode={'false' if keys_dir or hash_key_file else 'true'}",
            "--admin-auth=bearer-file",
            f"--admin-token-file={admin_token}",
            *extra_args,
        ],
        log_path or state / "logs" / "security.log",
        f"http://127.0.0.1:{port}/readyz",
    )
    return proc, admin_token, hash_key

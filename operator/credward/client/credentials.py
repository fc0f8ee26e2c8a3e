"""Where a workload's credentials come from: settings read once, and a secret file re-read when it changes.

credward's webhook mounts the credential's Secret as a directory (no ``subPath``)
and sets ``CLIENT_ID``, ``CLIENT_SECRET_PATH`` and ``SECURITY_BASE_URL``. The
kubelet updates such a mount atomically: the files are symlinks into ``..data``,
itself a symlink to a timestamped directory, and an update swaps ``..data``::

    <dir>/client-secret -> ..data/client-secret
    <dir>/..data        -> ..2026_12_01_15_00_00.123456789

So a change shows up as a different file behind the same path: :class:`SecretFile`
compares ``os.stat`` (which follows the symlinks) of the path with what it last
read, one system call per token fetch, and re-reads on any difference.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from credward.api import KEY_CLIENT_ID, KEY_TOKEN_URL
from credward.client.errors import ClientConfigError

ENV_CLIENT_ID = "CLIENT_ID"
ENV_SECRET_PATH = "CLIENT_SECRET_PATH"
ENV_BASE_URL = "SECURITY_BASE_URL"
ENV_TOKEN_URL = "CREDWARD_TOKEN_URL"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the authorizer needs, read once; ``from_env`` names what is missing.

    ``client_id`` None means: read the ``client-id`` file beside the secret.
    ``token_url`` None means: the ``token-url`` file beside the secret, else
    discovery at ``base_url``.
    """

    secret_path: Path
    client_id: str | None = None
    base_url: str | None = None
    token_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: str | Path | None) -> ClientSettings:
        """Settings from ``CLIENT_ID``, ``CLIENT_SECRET_PATH``, ``SECURITY_BASE_URL`` (and ``CREDWARD_TOKEN_URL``).

        Keyword arguments that are not None win over the environment.
        """

        def pick(name: str, env: str) -> str | None:
            value = overrides.get(name)
            if value is not None:
                return str(value)
            return environ.get(env) or None

        secret_path = pick("secret_path", ENV_SECRET_PATH)
        if secret_path is None:
            raise ClientConfigError(f"{ENV_SECRET_PATH} is not set: it names the mounted client-secret file")
        settings = cls(
            secret_path=Path(secret_path),
            client_id=pick("client_id", ENV_CLIENT_ID),
            base_url=pick("base_url", ENV_BASE_URL),
            token_url=pick("token_url", ENV_TOKEN_URL),
        )
        if settings.token_url is None and settings.base_url is None and not settings.sibling(KEY_TOKEN_URL).exists():
            raise ClientConfigError(
                f"no token endpoint: set {ENV_BASE_URL} (discovery) or {ENV_TOKEN_URL}, "
                f"or mount the Secret's {KEY_TOKEN_URL} file beside {settings.secret_path.name}"
            )
        return settings

    def sibling(self, key: str) -> Path:
        """Another key of the same mounted Secret (``client-id``, ``token-url``)."""
        return self.secret_path.parent / key


@dataclass(frozen=True, slots=True)
class Credentials:
    """One client id and secret as read together; the secret never appears in ``repr``."""

    client_id: str
    secret: str = field(repr=False)
    generation: int


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)  # follows the ..data symlink: a swap gives another inode
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def read_value(path: Path) -> str:
    """A Secret key's value as mounted (trailing newline stripped); :class:`ClientConfigError` if unreadable."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ClientConfigError(f"cannot read {path}: {reason}") from None
    if not value:
        raise ClientConfigError(f"{path} is empty")
    return value


class SecretFile:
    """The mounted client secret (and client id, if not given), re-read whenever the file behind the path changes."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._key: tuple[int, int, int, int] | None = None
        self._current: Credentials | None = None

    def current(self) -> Credentials:
        """The credentials as the mount holds them now (one ``stat`` when nothing changed)."""
        try:
            key = _stat_key(self._settings.secret_path)
        except OSError as exc:
            raise ClientConfigError(f"cannot read {self._settings.secret_path}: {exc.strerror}") from None
        current = self._current
        if current is not None and key == self._key:
            return current
        with self._lock:
            if self._current is not None and key == self._key:
                return self._current
            secret = read_value(self._settings.secret_path)
            client_id = self._settings.client_id or read_value(self._settings.sibling(KEY_CLIENT_ID))
            generation = self._current.generation + 1 if self._current else 1
            self._current = Credentials(client_id, secret, generation)
            self._key = key
            return self._current

    def token_url_file(self) -> str | None:
        """The Secret's ``token-url`` value, if that key is mounted."""
        path = self._settings.sibling(KEY_TOKEN_URL)
        return read_value(path) if path.exists() else None

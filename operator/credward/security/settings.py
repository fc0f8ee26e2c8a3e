"""The security service's configuration: read once at startup, frozen, and loud about mistakes.

Every key can come from a command-line flag or from an environment variable
(``CREDWARD_SECURITY_<KEY>``); the flag wins. :func:`load_settings` collects
*all* missing or malformed keys and raises one :class:`SettingsError` naming
each of them, so a misconfigured deployment fails at start with the whole list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from credward.domain.durations import parse_duration
from credward.domain.jwk import SigningAlgorithm as SigningAlgorithm  # shared with the operator
from credward.domain.scopes import ScopeProfile
from credward.errors import InvalidDuration
from credward.errors import SettingsError as SettingsError  # where callers have always imported it from

ENV_PREFIX = "CREDWARD_SECURITY_"


class HttpServerKind(StrEnum):
    """The ASGI server: granian is shipped; the others exist so ``make bench`` can compare (docs/http-server.md)."""

    GRANIAN = "granian"
    UVICORN = "uvicorn"
    HYPERCORN = "hypercorn"


class AdminAuthMode(StrEnum):
    TOKENREVIEW = "tokenreview"
    BEARER_FILE = "bearer-file"


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str
    store_url: str
    hash_key_file: Path
    keys_dir: Path
    admin_auth: AdminAuthMode
    host: str = "127.0.0.1"
    port: int = 9000
    dev_mode: bool = False
    signing_alg: SigningAlgorithm = SigningAlgorithm.ES256
    scope_profile: ScopeProfile = ScopeProfile.WLCG
    max_token_ttl: int = 3600
    # tokenreview mode
    admin_allow: tuple[str, ...] = ()
    kubeconfig: Path | None = None  # None: in-cluster service-account credentials
    admin_token_audiences: tuple[str, ...] = ()
    # bearer-file mode
    admin_token_file: Path | None = None
    # hot path and operations
    account_cache_ttl: float = 2.0
    key_reload_interval: float = 2.0
    throttle_client_failures: int = 10
    throttle_ip_failures: int = 50
    throttle_window: float = 60.0
    feed_max_wait: float = 30.0
    feed_subscriber_buffer: int = 64
    # client ids (resource servers) that may introspect other clients' tokens (RFC 7662 §4)
    introspect_allow: tuple[str, ...] = ()
    log_level: str = "INFO"
    # HTTP server and its limits (docs/http-server.md)
    http_server: HttpServerKind = HttpServerKind.GRANIAN
    header_timeout: float = 10.0  # a request head must arrive within this (also the idle keep-alive timeout)
    body_timeout: float = 10.0  # a request body must arrive within this, counted from its first read
    keep_alive: bool = True
    max_header_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 64
    max_body_bytes: int = 1024 * 1024
    max_concurrency: int = 256  # requests in the app at once (the revocation feed excepted); beyond: 503
    max_connections: int = 10_000  # open connections; beyond, new ones wait in the backlog
    backlog: int = 1024
    shutdown_timeout: float = 10.0  # on SIGTERM, in-flight requests get this long to finish

    @property
    def issuer_host(self) -> str:
        return urlsplit(self.issuer).hostname or "localhost"

    @property
    def token_endpoint(self) -> str:
        return self.issuer.rstrip("/") + "/oauth2/token"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.replace("\n", ",").split(",") if item.strip())


def _seconds(text: str) -> int:
    try:
        return int(parse_duration(text).total_seconds())
    except InvalidDuration:
        return int(text)


def _float_seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except InvalidDuration:
        return float(text)


def _issuer(text: str) -> str:
    """The issuer exactly as tokens carry it and validators compare it: ``scheme://host[:port]``, nothing more.

    A trailing slash is refused rather than dropped (``iss`` must equal the string validators are given);
    a path is refused because every endpoint and the metadata are served at the root (RFC 8414 §3.1 would
    put the metadata of ``https://h/p`` at ``https://h/.well-known/oauth-authorization-server/p``).
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("expected an http(s) URL without query or fragment, such as https://credward-security:9000")
    if parts.path == "/":
        raise ValueError(f"write it without the trailing slash ({text.rstrip('/')}): tokens carry it exactly")
    if parts.path:
        raise ValueError("an issuer with a path is not supported; serve the service at the root of its host")
    return text


def _store_url(text: str) -> str:
    if not (text.startswith("sqlite:///") or text.startswith(("postgresql://", "postgres://"))):
        raise ValueError("expected sqlite:///path/to/file.db or postgresql://user@host/db")
    return text


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number")
    return port


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def _timeout(text: str) -> float:
    """Between 1 ms and 60 s: granian's header-read timeout is whole milliseconds, at most 60 s."""
    value = _float_seconds(text)
    if not 0.001 <= value <= 60:
        raise ValueError("expected a duration between 1ms and 60s")
    return value


def _header_bytes(text: str) -> int:
    value = int(text)
    if value < 8192:
        raise ValueError("expected at least 8192 (the server's smallest read buffer)")
    return value


def _max_headers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError("expected 1 to 100 (the server refuses more than 100 itself)")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "issuer": _issuer,
    "store_url": _store_url,
    "hash_key_file": Path,
    "keys_dir": Path,
    "admin_auth": AdminAuthMode,
    "host": str,
    "port": _port,
    "dev_mode": _bool,
    "signing_alg": SigningAlgorithm,
    "scope_profile": ScopeProfile,
    "max_token_ttl": _seconds,
    "admin_allow": _list,
    "kubeconfig": Path,
    "admin_token_audiences": _list,
    "admin_token_file": Path,
    "account_cache_ttl": _float_seconds,
    "key_reload_interval": _float_seconds,
    "throttle_client_failures": _positive_int,
    "throttle_ip_failures": _positive_int,
    "throttle_window": _float_seconds,
    "feed_max_wait": _float_seconds,
    "feed_subscriber_buffer": _positive_int,
    "introspect_allow": _list,
    "log_level": str.upper,
    "http_server": HttpServerKind,
    "header_timeout": _timeout,
    "body_timeout": _timeout,
    "keep_alive": _bool,
    "max_header_bytes": _header_bytes,
    "max_headers": _max_headers,
    "max_body_bytes": _positive_int,
    "max_concurrency": _positive_int,
    "max_connections": _positive_int,
    "backlog": _positive_int,
    "shutdown_timeout": _float_seconds,
}


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def load_settings(flags: Mapping[str, str | None], env: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from flags (``None`` = not given) and the environment."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Settings):
        raw = flags.get(f.name)
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is None:
            continue
        try:
            values[f.name] = _PARSERS[f.name](raw)
        except (ValueError, TypeError) as exc:
            problems.append(f"{flag_name(f.name)} / {env_name(f.name)}: {_describe(f.name, raw)} is malformed ({exc})")
    for key in ("issuer", "store_url", "hash_key_file", "keys_dir", "admin_auth"):
        if key not in values and not any(key in p for p in problems):
            problems.append(f"{flag_name(key)} / {env_name(key)} is required")
    mode = values.get("admin_auth")
    if mode is AdminAuthMode.BEARER_FILE and "admin_token_file" not in values:
        problems.append(
            f"{flag_name('admin_token_file')} / {env_name('admin_token_file')} is required with bearer-file"
        )
    if mode is AdminAuthMode.TOKENREVIEW and not values.get("admin_allow"):
        problems.append(
            f"{flag_name('admin_allow')} / {env_name('admin_allow')} is required with tokenreview "
            "(comma-separated system:serviceaccount:<namespace>:<name>)"
        )
    for user in values.get("admin_allow", ()):
        if not user.startswith("system:serviceaccount:") or user.count(":") != 3:
            problems.append(f"{flag_name('admin_allow')}: {user!r} is not system:serviceaccount:<namespace>:<name>")
    if problems:
        raise SettingsError("invalid security service configuration:\n  " + "\n  ".join(problems))
    return Settings(**values)


def _describe(key: str, raw: str) -> str:
    """Echo a value unless the key could hold something sensitive (URLs may embed passwords)."""
    return "the value" if key == "store_url" else repr(raw)

"""Operator configuration, read once at start-up from flags and the environment.

Every key is a flag of ``credward operator run`` or a ``CREDWARD_*`` variable
(flags win); a missing or malformed key stops the start with a message that
names it. Files (hash key, admin token) are checked here and read later by
their owners: the hash key once, the token whenever the kubelet replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from credward.domain.credential import Endpoints
from credward.domain.durations import parse_duration
from credward.domain.secrets import parse_hash_key
from credward.errors import HashKeyError, InvalidSpec, SettingsError

DEFAULT_SECURITY_BASE_URL = "http://credward-security:9000"
IN_CLUSTER_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Sustained requests per second and burst to the Kubernetes API (docs/operator.md says why these).
DEFAULT_KUBE_QPS = 500.0
DEFAULT_KUBE_BURST = 1000

__all__ = ["OperatorSettings", "SettingsError", "read_hash_key"]


def read_hash_key(path: Path) -> bytes:
    """The secret-hash key exactly as the security service reads it (:func:`credward.domain.secrets.parse_hash_key`)."""
    try:
        return parse_hash_key(path.read_bytes())
    except OSError as exc:
        raise SettingsError(f"CREDWARD_HASH_KEY_FILE: cannot read {path.name}: {exc.strerror}") from None
    except HashKeyError as exc:
        raise SettingsError(f"CREDWARD_HASH_KEY_FILE: {path.name}: {exc}") from None


@dataclass(frozen=True)
class OperatorSettings:
    security_base_url: str = DEFAULT_SECURITY_BASE_URL
    issuer: str = DEFAULT_SECURITY_BASE_URL
    hash_key_file: Path = Path("hash-key")
    token_file: Path = Path(IN_CLUSTER_TOKEN_FILE)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync: timedelta = timedelta(minutes=10)
    info_interval: timedelta = timedelta(seconds=10)
    service_timeout: timedelta = timedelta(seconds=5)
    backoff_max: timedelta = timedelta(minutes=5)
    conflict_recheck: timedelta = timedelta(seconds=5)
    cleanup_timeout: timedelta = timedelta(hours=1)
    field_manager: str = "credward-operator"
    liveness_port: int | None = None
    # -- Kubernetes API client-side rate limit (client-go's QPS/Burst) --
    kube_qps: float = DEFAULT_KUBE_QPS
    kube_burst: int = DEFAULT_KUBE_BURST

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(issuer=self.issuer, token_url=f"{self.security_base_url.rstrip('/')}/oauth2/token")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> OperatorSettings:
        """Build from ``CREDWARD_*`` variables; explicit overrides (flags) win. Fails loudly on bad values."""
        env = os.environ if env is None else env

        def value(key: str, env_key: str, default: str | None = None) -> str | None:
            given = overrides.get(key)
            if given not in (None, "", ()):
                return str(given)
            return env.get(env_key, default)

        base = value("security_base_url", "CREDWARD_SECURITY_BASE_URL", DEFAULT_SECURITY_BASE_URL) or ""
        _check_url("CREDWARD_SECURITY_BASE_URL", base)
        issuer = value("issuer", "CREDWARD_ISSUER", base.rstrip("/")) or ""
        _check_url("CREDWARD_ISSUER", issuer)
        ns_value = overrides.get("namespaces") or tuple(
            n.strip() for n in env.get("CREDWARD_NAMESPACES", "").split(",") if n.strip()
        )
        hash_key_file = value("hash_key_file", "CREDWARD_HASH_KEY_FILE")
        if not hash_key_file:
            raise SettingsError("CREDWARD_HASH_KEY_FILE is required: the file holding the secret-hash key")
        read_hash_key(Path(hash_key_file))  # fail at start, not at the first registration
        token_file = Path(value("token_file", "CREDWARD_SECURITY_TOKEN_FILE", IN_CLUSTER_TOKEN_FILE) or "")
        if not token_file.is_file():
            raise SettingsError(f"CREDWARD_SECURITY_TOKEN_FILE: {token_file} is not a readable file")

        def duration(key: str, env_key: str, default: str) -> timedelta:
            text = value(key, env_key, default) or default
            try:
                parsed = parse_duration(text)
            except InvalidSpec as exc:
                raise SettingsError(f"{env_key}: {exc}") from None
            if parsed <= timedelta(0):
                raise SettingsError(f"{env_key}: must be longer than 0s")
            return parsed

        port_text = value("liveness_port", "CREDWARD_LIVENESS_PORT")
        try:
            port = int(port_text) if port_text else None
        except ValueError:
            raise SettingsError(f"CREDWARD_LIVENESS_PORT: {port_text!r} is not a port number") from None
        kube_qps, kube_burst = _rate_limit(value)
        return cls(
            security_base_url=base.rstrip("/"),
            issuer=issuer.rstrip("/"),
            hash_key_file=Path(hash_key_file),
            token_file=token_file,
            namespaces=tuple(str(n) for n in ns_value),  # type: ignore[attr-defined]
            resync=duration("resync", "CREDWARD_RESYNC", "10m"),
            info_interval=duration("info_interval", "CREDWARD_INFO_INTERVAL", "10s"),
            service_timeout=duration("service_timeout", "CREDWARD_SERVICE_TIMEOUT", "5s"),
            backoff_max=duration("backoff_max", "CREDWARD_BACKOFF_MAX", "5m"),
            conflict_recheck=duration("conflict_recheck", "CREDWARD_CONFLICT_RECHECK", "5s"),
            cleanup_timeout=duration("cleanup_timeout", "CREDWARD_CLEANUP_TIMEOUT", "1h"),
            liveness_port=port,
            kube_qps=kube_qps,
            kube_burst=kube_burst,
        )


def _rate_limit(value: Callable[[str, str, str | None], str | None]) -> tuple[float, int]:
    """``CREDWARD_KUBE_QPS`` (0 turns the limit off) and ``CREDWARD_KUBE_BURST`` (at least 1)."""
    qps_text = value("kube_qps", "CREDWARD_KUBE_QPS", None)
    burst_text = value("kube_burst", "CREDWARD_KUBE_BURST", None)
    try:
        qps = float(qps_text) if qps_text else DEFAULT_KUBE_QPS
    except ValueError:
        raise SettingsError(f"CREDWARD_KUBE_QPS: {qps_text!r} is not a number") from None
    try:
        burst = int(burst_text) if burst_text else DEFAULT_KUBE_BURST
    except ValueError:
        raise SettingsError(f"CREDWARD_KUBE_BURST: {burst_text!r} is not a whole number") from None
    if not qps >= 0 or qps == float("inf"):
        raise SettingsError("CREDWARD_KUBE_QPS: must be 0 (no limit) or a positive number")
    if burst < 1:
        raise SettingsError("CREDWARD_KUBE_BURST: must be at least 1")
    return qps, burst


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{key}: {value!r} is not an http(s) URL")

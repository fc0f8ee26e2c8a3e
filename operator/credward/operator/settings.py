"""Operator configuration, read once at start-up from flags and the environment.

Every key is a flag of ``credward operator run`` or a ``CREDWARD_*`` variable
(flags win); a missing or malformed key stops the start with a message that
names it. Files (hash key, admin token) are checked here and read later by
their owners: the hash key once, the token whenever the kubelet replaces it.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from credward.domain.credential import Endpoints
from credward.domain.durations import format_duration, parse_duration
from credward.domain.jwk import SigningAlgorithm
from credward.domain.leadership import LeaseTiming
from credward.domain.secrets import parse_hash_key
from credward.errors import HashKeyError, InvalidSpec, SettingsError

DEFAULT_SECURITY_BASE_URL = "http://credward-security:9000"
IN_CLUSTER_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Sustained requests per second and burst to the Kubernetes API (docs/operator.md says why these).
DEFAULT_KUBE_QPS = 500.0
DEFAULT_KUBE_BURST = 1000

__all__ = ["LeaderElectionSettings", "OperatorSettings", "SettingsError", "read_hash_key"]


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
    hash_key_file: Path | None = Path("hash-key")  # None: the hash key comes from CREDWARD_HASH_KEY_SECRET
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
    leader_election: LeaderElectionSettings | None = None  # None: this replica always leads
    # -- shared Secrets and signing-key rotation (docs/operator.md, "Shared Secrets", "Signing keys") --
    pod_namespace: str | None = None  # CREDWARD_POD_NAMESPACE: where credward runs and its shared Secrets live
    hash_key_secret: str | None = None
    signing_keys_secret: str | None = None
    signing_key_alg: SigningAlgorithm = SigningAlgorithm.ES256
    signing_key_period: timedelta = timedelta(days=30)
    signing_key_jwks_cache: timedelta = timedelta(minutes=5)
    signing_key_propagation: timedelta = timedelta(minutes=2)
    signing_key_clock_skew: timedelta = timedelta(minutes=1)
    # Coalesced restarts on rotation (credward.operator.restarts): look at a workload this long after the
    # first trigger of a burst; wait at most this long for further rotations before restarting.
    restart_debounce: timedelta = timedelta(seconds=2)
    restart_max_wait: timedelta = timedelta(minutes=1)
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
        hash_key_secret = env.get("CREDWARD_HASH_KEY_SECRET") or None
        if hash_key_file and hash_key_secret:
            raise SettingsError("CREDWARD_HASH_KEY_FILE and CREDWARD_HASH_KEY_SECRET are both set: choose one")
        if not hash_key_file and not hash_key_secret:
            raise SettingsError(
                "CREDWARD_HASH_KEY_FILE or CREDWARD_HASH_KEY_SECRET is required: the secret-hash key, "
                "as a file or as a Secret in CREDWARD_POD_NAMESPACE"
            )
        if hash_key_file:
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
        # -- shared Secrets and signing-key rotation ------------------------------------------------------------
        pod_namespace = env.get("CREDWARD_POD_NAMESPACE") or None
        signing_keys_secret = env.get("CREDWARD_SIGNING_KEYS_SECRET") or None
        for key, name in (
            ("CREDWARD_HASH_KEY_SECRET", hash_key_secret),
            ("CREDWARD_SIGNING_KEYS_SECRET", signing_keys_secret),
        ):
            if name and not pod_namespace:
                raise SettingsError(f"{key} needs CREDWARD_POD_NAMESPACE: the namespace its Secret lives in")
            if name and not _DNS_SUBDOMAIN.fullmatch(name):
                raise SettingsError(f"{key}: {name!r} is not a valid Secret name")
        alg_text = env.get("CREDWARD_SIGNING_KEY_ALG", SigningAlgorithm.ES256.value)
        try:
            signing_key_alg = SigningAlgorithm(alg_text)
        except ValueError:
            choices = ", ".join(a.value for a in SigningAlgorithm)
            raise SettingsError(f"CREDWARD_SIGNING_KEY_ALG: {alg_text!r} is not one of {choices}") from None
        key_period = duration("signing_key_period", "CREDWARD_SIGNING_KEY_PERIOD", "720h")
        jwks_cache = duration("signing_key_jwks_cache", "CREDWARD_SIGNING_KEY_JWKS_CACHE", "5m")
        propagation = duration("signing_key_propagation", "CREDWARD_SIGNING_KEY_PROPAGATION", "2m")
        clock_skew = duration("signing_key_clock_skew", "CREDWARD_SIGNING_KEY_CLOCK_SKEW", "1m")
        if key_period < jwks_cache + propagation:
            raise SettingsError(
                f"CREDWARD_SIGNING_KEY_PERIOD ({format_duration(key_period)}) must be at least "
                "CREDWARD_SIGNING_KEY_JWKS_CACHE + CREDWARD_SIGNING_KEY_PROPAGATION "
                f"({format_duration(jwks_cache + propagation)}): a next key is published that long before it signs"
            )
        kube_qps, kube_burst = _rate_limit(value)
        return cls(
            security_base_url=base.rstrip("/"),
            issuer=issuer.rstrip("/"),
            hash_key_file=Path(hash_key_file) if hash_key_file else None,
            token_file=token_file,
            namespaces=tuple(str(n) for n in ns_value),  # type: ignore[attr-defined]
            resync=duration("resync", "CREDWARD_RESYNC", "10m"),
            info_interval=duration("info_interval", "CREDWARD_INFO_INTERVAL", "10s"),
            service_timeout=duration("service_timeout", "CREDWARD_SERVICE_TIMEOUT", "5s"),
            backoff_max=duration("backoff_max", "CREDWARD_BACKOFF_MAX", "5m"),
            conflict_recheck=duration("conflict_recheck", "CREDWARD_CONFLICT_RECHECK", "5s"),
            cleanup_timeout=duration("cleanup_timeout", "CREDWARD_CLEANUP_TIMEOUT", "1h"),
            liveness_port=port,
            leader_election=leader_election_from_env(env),
            pod_namespace=pod_namespace,
            hash_key_secret=hash_key_secret,
            signing_keys_secret=signing_keys_secret,
            signing_key_alg=signing_key_alg,
            signing_key_period=key_period,
            signing_key_jwks_cache=jwks_cache,
            signing_key_propagation=propagation,
            signing_key_clock_skew=clock_skew,
            restart_debounce=duration("restart_debounce", "CREDWARD_RESTART_DEBOUNCE", "2s"),
            restart_max_wait=duration("restart_max_wait", "CREDWARD_RESTART_MAX_WAIT", "1m"),
            kube_qps=kube_qps,
            kube_burst=kube_burst,
        )


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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


# --- leader election (several operator replicas; credward.operator.leader) ---------------------------------

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class LeaderElectionSettings:
    """Which Lease the replicas compete for, this replica's identity in it, and the timing rules."""

    namespace: str
    identity: str
    lease: str = "credward-operator"
    timing: LeaseTiming = field(default_factory=LeaseTiming)


def leader_election_from_env(env: Mapping[str, str]) -> LeaderElectionSettings | None:
    """``CREDWARD_LEADER_ELECTION=true`` and its keys; None when it is off (the default: one replica)."""
    enabled = env.get("CREDWARD_LEADER_ELECTION", "false").strip().lower()
    if enabled not in ("true", "false"):
        raise SettingsError(f"CREDWARD_LEADER_ELECTION: {enabled!r} is neither true nor false")
    if enabled == "false":
        return None
    namespace = env.get("CREDWARD_POD_NAMESPACE", "").strip()
    if not namespace:
        raise SettingsError(
            "CREDWARD_POD_NAMESPACE is required with CREDWARD_LEADER_ELECTION=true: the Lease lives in "
            "credward's own namespace (set it from the downward API, metadata.namespace)"
        )
    lease = env.get("CREDWARD_LEADER_ELECTION_LEASE", "credward-operator").strip()
    if len(lease) > 253 or not _DNS_NAME.match(lease):
        raise SettingsError(f"CREDWARD_LEADER_ELECTION_LEASE: {lease!r} is not a valid object name")
    # The Pod's name (downward API) in a cluster; elsewhere host plus a random part, so two processes differ.
    identity = env.get("CREDWARD_POD_NAME", "").strip() or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"

    def seconds(key: str, default: timedelta) -> timedelta:
        text = env.get(key, "").strip()
        if not text:
            return default
        try:
            return parse_duration(text)
        except InvalidSpec as exc:
            raise SettingsError(f"{key}: {exc}") from None

    defaults = LeaseTiming()
    lease_duration = seconds("CREDWARD_LEADER_ELECTION_LEASE_DURATION", defaults.lease_duration)
    renew_deadline = seconds("CREDWARD_LEADER_ELECTION_RENEW_DEADLINE", defaults.renew_deadline)
    retry_period = seconds("CREDWARD_LEADER_ELECTION_RETRY_PERIOD", defaults.retry_period)
    try:
        timing = LeaseTiming(lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period)
    except InvalidSpec as exc:
        raise SettingsError(f"CREDWARD_LEADER_ELECTION_*: {exc}") from None
    return LeaderElectionSettings(namespace=namespace, identity=identity, lease=lease, timing=timing)

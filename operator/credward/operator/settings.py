"""Operator configuration, read once at start-up from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from credward.domain.credential import Endpoints
from credward.domain.durations import parse_duration
from credward.errors import InvalidSpec

DEFAULT_SECURITY_BASE_URL = "http://credward-security:9000"


class SettingsError(InvalidSpec):
    """A configuration key is missing or malformed; the message names it."""


@dataclass(frozen=True)
class OperatorSettings:
    security_base_url: str = DEFAULT_SECURITY_BASE_URL
    issuer: str = DEFAULT_SECURITY_BASE_URL
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync: timedelta = timedelta(minutes=10)
    field_manager: str = "credward-operator"
    liveness_port: int | None = None

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(issuer=self.issuer, token_url=f"{self.security_base_url.rstrip('/')}/oauth2/token")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> OperatorSettings:
        """Build from ``CREDWARD_*`` variables; explicit overrides (flags) win. Fails loudly on bad values."""
        env = os.environ if env is None else env
        base = str(
            overrides.get("security_base_url") or env.get("CREDWARD_SECURITY_BASE_URL", DEFAULT_SECURITY_BASE_URL)
        )
        _check_url("CREDWARD_SECURITY_BASE_URL", base)
        issuer = str(overrides.get("issuer") or env.get("CREDWARD_ISSUER", base.rstrip("/")))
        _check_url("CREDWARD_ISSUER", issuer)
        ns_value = overrides.get("namespaces") or tuple(
            n.strip() for n in env.get("CREDWARD_NAMESPACES", "").split(",") if n.strip()
        )
        resync_text = str(overrides.get("resync") or env.get("CREDWARD_RESYNC", "10m"))
        try:
            resync = parse_duration(resync_text)
        except InvalidSpec as exc:
            raise SettingsError(f"CREDWARD_RESYNC: {exc}") from None
        port_text = overrides.get("liveness_port") or env.get("CREDWARD_LIVENESS_PORT")
        try:
            port = int(str(port_text)) if port_text else None
        except ValueError:
            raise SettingsError(f"CREDWARD_LIVENESS_PORT: {port_text!r} is not a port number") from None
        return cls(
            security_base_url=base.rstrip("/"),
            issuer=issuer.rstrip("/"),
            namespaces=tuple(ns_value),  # type: ignore[arg-type]
            resync=resync,
            liveness_port=port,
        )


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{key}: {value!r} is not an http(s) URL")

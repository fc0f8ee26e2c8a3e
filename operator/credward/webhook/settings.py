"""Webhook configuration, read once at start-up from ``CREDWARD_WEBHOOK_*`` (flags win); fails loudly.

The webhook is on when a port is given (``CREDWARD_WEBHOOK_PORT`` or
``--webhook-port``). The API server reaches it either through a Service in the
cluster (the default: ``CREDWARD_WEBHOOK_SERVICE`` in the operator's
namespace) or at a URL (``CREDWARD_WEBHOOK_URL``, e.g. ``https://127.0.0.1:9443``
for a local control plane); the serving certificate names whichever it is.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from credward.domain.durations import parse_duration
from credward.domain.injection import DEFAULT_MOUNT_ROOT, InjectionSettings
from credward.domain.webhook_tls import TLSPolicy
from credward.errors import InvalidSpec

DEFAULT_SECURITY_BASE_URL = "http://credward-security:9000"
PREFIX = "CREDWARD_WEBHOOK_"


class WebhookSettingsError(InvalidSpec):
    """A webhook configuration key is missing or malformed; the message names it."""


@dataclass(frozen=True)
class WebhookSettings:
    port: int
    security_base_url: str = DEFAULT_SECURITY_BASE_URL
    bind: str = "0.0.0.0"  # noqa: S104  (the API server must reach it from outside the Pod)
    url: str | None = None  # clientConfig.url; None: clientConfig.service
    namespace: str = "credward"  # the operator's own: its pods are never injected or refused
    service: str = "credward-webhook"
    service_port: int = 443
    tls_secret: str = "credward-webhook-tls"
    configuration: str = "credward"  # name of the Mutating- and ValidatingWebhookConfiguration
    ca_validity: timedelta = timedelta(days=365)
    cert_validity: timedelta = timedelta(days=90)
    overlap: timedelta = timedelta(minutes=5)
    sync_interval: timedelta = timedelta(seconds=30)
    timeout_seconds: int = 5
    mount_root: str = DEFAULT_MOUNT_ROOT
    excluded_namespaces: tuple[str, ...] = ("kube-system",)
    field_manager: str = "credward-webhook"

    @property
    def injection(self) -> InjectionSettings:
        return InjectionSettings(security_base_url=self.security_base_url, mount_root=self.mount_root)

    @property
    def tls_policy(self) -> TLSPolicy:
        dns: tuple[str, ...]
        ips: tuple[str, ...] = ()
        if self.url:
            host = urlsplit(self.url).hostname or ""
            try:
                ips, dns = (str(ipaddress.ip_address(host)),), ()
            except ValueError:
                dns = (host,)
        else:
            svc, ns = self.service, self.namespace
            dns = (svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local")
        return TLSPolicy(self.ca_validity, self.cert_validity, self.overlap, dns, ips)

    @property
    def never_admitted_namespaces(self) -> tuple[str, ...]:
        """Namespaces the webhooks never see: the operator's own (it must start without itself) and kube-system."""
        return tuple(dict.fromkeys((self.namespace, *self.excluded_namespaces)))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> WebhookSettings | None:
        """None when no port is configured (the webhook is off); otherwise every key checked."""
        env = os.environ if env is None else env

        def value(key: str, default: str | None = None) -> str | None:
            flag = overrides.get(key.lower())
            return str(flag) if flag not in (None, "") else env.get(PREFIX + key.upper(), default)

        port_text = value("port")
        if not port_text:
            return None
        url = value("url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise WebhookSettingsError(
                    f"{PREFIX}URL: {url!r} is not an https URL (the API server calls only https)"
                )
        base = str(
            overrides.get("security_base_url") or env.get("CREDWARD_SECURITY_BASE_URL", DEFAULT_SECURITY_BASE_URL)
        )
        base_parts = urlsplit(base)
        if base_parts.scheme not in ("http", "https") or not base_parts.hostname:
            raise WebhookSettingsError(f"CREDWARD_SECURITY_BASE_URL: {base!r} is not an http(s) URL")
        namespace = value("namespace") or env.get("POD_NAMESPACE") or "credward"
        settings = cls(
            port=_port("port", port_text),
            security_base_url=base.rstrip("/"),
            bind=value("bind", "0.0.0.0") or "0.0.0.0",  # noqa: S104
            url=url.rstrip("/") if url else None,
            namespace=namespace,
            service=value("service", "credward-webhook") or "credward-webhook",
            service_port=_port("service_port", value("service_port", "443") or "443"),
            tls_secret=value("tls_secret", "credward-webhook-tls") or "credward-webhook-tls",
            configuration=value("configuration", "credward") or "credward",
            ca_validity=_duration("ca_validity", value("ca_validity", "8760h")),
            cert_validity=_duration("cert_validity", value("cert_validity", "2160h")),
            overlap=_duration("overlap", value("overlap", "5m")),
            sync_interval=_duration("sync_interval", value("sync_interval", "30s")),
            timeout_seconds=_int("timeout_seconds", value("timeout_seconds", "5"), 1, 30),
            mount_root=value("mount_root", DEFAULT_MOUNT_ROOT) or DEFAULT_MOUNT_ROOT,
            excluded_namespaces=tuple(
                n.strip() for n in (value("excluded_namespaces", "kube-system") or "").split(",") if n.strip()
            ),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """The timing rules renewal relies on; each broken one named."""
        if self.overlap < 2 * self.sync_interval:
            raise WebhookSettingsError(
                f"{PREFIX}OVERLAP ({self.overlap}) must be at least twice {PREFIX}SYNC_INTERVAL "
                f"({self.sync_interval}), so every replica loads a new certificate within it"
            )
        if self.cert_validity / 3 <= self.overlap + self.sync_interval:
            raise WebhookSettingsError(
                f"{PREFIX}CERT_VALIDITY ({self.cert_validity}) is too short: a third of it must exceed "
                f"{PREFIX}OVERLAP + {PREFIX}SYNC_INTERVAL"
            )
        if self.ca_validity / 3 <= 2 * self.overlap:
            raise WebhookSettingsError(
                f"{PREFIX}CA_VALIDITY ({self.ca_validity}) is too short: a third of it must exceed twice "
                f"{PREFIX}OVERLAP, the time a CA rollover takes before the old CA expires"
            )
        if not self.mount_root.startswith("/"):
            raise WebhookSettingsError(f"{PREFIX}MOUNT_ROOT: {self.mount_root!r} is not an absolute path")


def _port(key: str, text: str) -> int:
    return _int(key, text, 1, 65535)


def _int(key: str, text: str | None, low: int, high: int) -> int:
    try:
        number = int(str(text))
    except ValueError:
        raise WebhookSettingsError(f"{PREFIX}{key.upper()}: {text!r} is not a whole number") from None
    if not low <= number <= high:
        raise WebhookSettingsError(f"{PREFIX}{key.upper()}: {number} is not between {low} and {high}")
    return number


def _duration(key: str, text: str | None) -> timedelta:
    try:
        return parse_duration(str(text))
    except InvalidSpec as exc:
        raise WebhookSettingsError(f"{PREFIX}{key.upper()}: {exc}") from None

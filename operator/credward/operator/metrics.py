"""The operator's Prometheus metrics and the small HTTP server that serves them beside ``/healthz``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from credward.domain.credential import Facts

log = logging.getLogger(__name__)


class OperatorMetrics:
    """One registry per operator (no global state, so tests may build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "credward_operator_reconciles_total",
            "Reconciles of a credential (with its bindings), by result",
            ["result"],
            registry=self.registry,
        )
        self.retries = Counter(
            "credward_operator_retries_total",
            "Reconciles retried with backoff, by the kind of failure",
            ["reason"],
            registry=self.registry,
        )
        self.unexpected = Counter(
            "credward_operator_unexpected_errors_total",
            "Exceptions no rule expected (bugs): logged with a traceback and retried with backoff",
            ["error"],
            registry=self.registry,
        )
        self.service_up = Gauge(
            "credward_operator_security_service_up",
            "1 if the last GET /v1/admin/info answered, else 0",
            registry=self.registry,
        )
        self.pending = Gauge(
            "credward_operator_pending_wakeups", "Keys with a scheduled reconcile", registry=self.registry
        )
        # -- the credential lifecycle (rotation, retirement, expiry) ---------------------------------------
        per_credential = ["namespace", "name"]
        self.next_rotation = Gauge(
            "credward_operator_next_rotation_timestamp_seconds",
            "When the credential's client secret is next rotated (Unix time); absent while revoked or expired",
            per_credential,
            registry=self.registry,
        )
        self.expiry = Gauge(
            "credward_operator_credential_expiry_timestamp_seconds",
            "When the credential's account expires (creation + spec.lifetime, Unix time); absent without a lifetime",
            per_credential,
            registry=self.registry,
        )
        self.expiring_soon = Gauge(
            "credward_operator_credential_expiring_soon",
            "1 while the credential is within spec.expiryWarning of its expiry (condition ExpiringSoon), else 0",
            per_credential,
            registry=self.registry,
        )
        self.in_use_past_grace = Gauge(
            "credward_operator_secret_in_use_past_grace_callers",
            "Distinct callers still using a rotated-out secret past its grace period (0: none); it is retired "
            "once they stop, or at its cap",
            per_credential,
            registry=self.registry,
        )
        self.still_in_use_warnings = Counter(
            "credward_operator_secret_still_in_use_warnings_total",
            "SecretStillInUse Warning Events posted: a caller used a secret about to be retired",
            registry=self.registry,
        )
        self.rotations = Counter(
            "credward_operator_rotations_total",
            "Client secrets rotated, by why (period, requested, emergency)",
            ["reason"],
            registry=self.registry,
        )
        self.rotation_failures = Counter(
            "credward_operator_rotation_failures_total",
            "Rotations that were due but not carried out this time (retried), by the step that failed",
            ["step"],
            registry=self.registry,
        )
        self.registration_errors = Counter(
            "credward_operator_registration_errors_total",
            "Pushes of an account to the security service that failed, by kind (unreachable, refused)",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "credward_operator_reconcile_duration_seconds",
            "Time of one reconcile of a credential (with its bindings), from its lock to its next wake-up",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "credward_operator_queue_depth",
            "Reconciles due now: triggered or woken, waiting for their key's lock or running",
            registry=self.registry,
        )

    def credential(self, namespace: str, name: str, facts: Facts) -> None:
        """The per-credential gauges after a decision."""
        labels = {"namespace": namespace, "name": name}
        for gauge, at in ((self.next_rotation, facts.next_rotation), (self.expiry, facts.expires_at)):
            if at is None:
                _remove(gauge, namespace, name)
            else:
                gauge.labels(**labels).set(at.timestamp())
        if facts.expires_at is None:
            _remove(self.expiring_soon, namespace, name)
        else:
            self.expiring_soon.labels(**labels).set(int(facts.expiring_soon))
        self.in_use_past_grace.labels(**labels).set(facts.in_use_past_grace)
        if facts.rotated is not None:
            self.rotations.labels(reason=facts.rotated).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A credential that is gone keeps no series."""
        for gauge in (self.next_rotation, self.expiry, self.expiring_soon, self.in_use_past_grace):
            _remove(gauge, namespace, name)


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):  # never set for this credential
        gauge.remove(namespace, name)


class HealthServer:
    """``GET /healthz`` (200 while the operator runs) and ``GET /metrics`` on one port."""

    def __init__(self, metrics: OperatorMetrics, port: int, pending: Callable[[], int]) -> None:
        self._metrics = metrics
        self._port = port
        self._pending = pending
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self._port).start()  # noqa: S104 - probed by the kubelet

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        self._metrics.pending.set(self._pending())
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

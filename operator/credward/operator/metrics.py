"""The operator's Prometheus metrics and the small HTTP server that serves them beside ``/healthz``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

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

"""Keeps the webhook's certificates: one Secret shared by every replica, the caBundle, and the live TLS context.

The leading replica (every replica when there is no leader election) runs
:meth:`TLSManager.sync` every ``sync_interval`` (sooner when a renewal step is
due): it reads the Secret, lets
:func:`credward.domain.webhook_tls.decide` choose the next step, stores it
(optimistic concurrency: a replica that loses the race re-reads next time),
publishes the trust bundle to the webhook configurations, and then serves the
stored serving certificate. A standby only :meth:`follows <TLSManager.follow>`:
it serves what the Secret holds and writes nothing. New TLS handshakes pick up a new certificate at
once (:class:`ServingContext`); connections already open keep theirs, which is
fine because the bundle still trusts its CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from credward.domain.timefmt import to_rfc3339
from credward.domain.webhook_tls import (
    ANNOTATION_TRUST_CHANGED,
    Pem,
    TLSState,
    decide,
    fingerprint,
    split_bundle,
)
from credward.webhook.configuration import Configurations
from credward.webhook.settings import WebhookSettings, WebhookSettingsError

log = logging.getLogger(__name__)

MIN_WAIT = 0.05


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ServingContext:
    """The server's TLS context; ``load`` swaps the certificate for every handshake from then on.

    The listening socket keeps one :class:`ssl.SSLContext`; its SNI callback (called on every
    handshake, with or without a server name) hands the connection the newest context.
    """

    def __init__(self) -> None:
        self._current: ssl.SSLContext | None = None
        self.fingerprint = ""
        self.base = self._new_context()
        self.base.sni_callback = self._pick

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self._current is not None and self._current is not ctx:
            sslobj.context = self._current

    def load(self, pem: Pem) -> bool:
        """Serve ``pem`` from the next handshake on; False when it is already served."""
        fp = fingerprint(pem.cert)
        if fp == self.fingerprint:
            return False
        ctx = self._new_context()
        # ssl loads keys from files only: a private directory, removed at once.
        with tempfile.TemporaryDirectory(prefix="credward-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, data in ((cert_path, pem.cert), (key_path, pem.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert_path, key_path)
            if self._current is None:
                self.base.load_cert_chain(cert_path, key_path)
        self._current = ctx
        self.fingerprint = fp
        return True


class TLSManager:
    def __init__(
        self,
        api: client.ApiClient,
        settings: WebhookSettings,
        configurations: Configurations,
        serving: ServingContext,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._settings = settings
        self._configurations = configurations
        self.serving = serving
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.bundle = b""
        self.leading = True  # False on a standby replica: follow the Secret, never write it

    async def _read(self) -> tuple[TLSState | None, str | None]:
        try:
            secret = await self._core.read_namespaced_secret(self._settings.tls_secret, self._settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return TLSState.from_secret(data, secret.metadata.annotations or {}), secret.metadata.resource_version

    async def _write(self, state: TLSState, resource_version: str | None) -> bool:
        """Store ``state``; False when another replica wrote first (then it is re-read next time)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": self._settings.tls_secret,
                "namespace": self._settings.namespace,
                "labels": {"app.kubernetes.io/managed-by": "credward", "app.kubernetes.io/component": "webhook"},
                "annotations": (
                    {ANNOTATION_TRUST_CHANGED: to_rfc3339(state.trust_changed_at)} if state.trust_changed_at else {}
                ),
            },
            "data": {k: base64.b64encode(v).decode() for k, v in state.secret_data().items()},
        }
        try:
            if resource_version is None:
                await self._core.create_namespaced_secret(self._settings.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = resource_version
                await self._core.replace_namespaced_secret(self._settings.tls_secret, self._settings.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 404:
                raise WebhookSettingsError(
                    f"namespace {self._settings.namespace!r} (CREDWARD_WEBHOOK_NAMESPACE, the operator's own) does not "
                    "exist: the webhook keeps its certificates there"
                ) from None
            raise
        return True

    async def sync(self, *, publish: bool = True) -> dt.datetime:
        """One pass: decide, store, publish, serve. Returns when the next pass is due at the latest.

        ``publish=False`` before the server listens: the configurations must not point the API
        server at a port nobody answers yet.
        """
        policy = self._settings.tls_policy
        while True:
            state, version = await self._read()
            published = await self._configurations.published()
            now = self._clock()
            plan = decide(state, now, policy, published)
            if plan.changed:
                if not await self._write(plan.state, version):
                    continue  # another replica stored a step: decide again from what it wrote
                log.info("webhook TLS: %s (serving %s)", plan.reason, fingerprint(plan.state.serving.cert)[:16])
            wanted = frozenset(fingerprint(c) for c in split_bundle(plan.state.bundle))
            if publish and wanted != published:
                await self._configurations.apply(plan.state.bundle, force=True)
            self.bundle = plan.state.bundle
            if self.serving.load(plan.state.serving):
                log.info("webhook TLS: serving certificate %s", self.serving.fingerprint[:16])
            if not plan.changed:
                return plan.wake_at

    async def follow(self) -> bool:
        """A standby's pass: serve the stored certificate, write nothing. False while nothing is stored yet."""
        state, _ = await self._read()
        if state is None:
            return False
        self.bundle = state.bundle
        if self.serving.load(state.serving):
            log.info("webhook TLS: serving certificate %s (stored by the leader)", self.serving.fingerprint[:16])
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="credward-webhook-tls")

    async def _loop(self) -> None:
        interval = self._settings.sync_interval.total_seconds()
        while True:
            try:
                if self.leading:
                    wake_at = await self.sync()
                    wait = (wake_at - self._clock()).total_seconds()
                else:
                    await self.follow()
                    wait = interval
            except Exception:  # every failure is retried on the next pass; the old certificate keeps serving
                log.exception("webhook TLS sync failed; retrying in %.1fs", interval)
                wait = interval
            await asyncio.sleep(min(interval, max(MIN_WAIT, wait)))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

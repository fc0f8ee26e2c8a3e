"""The webhook as a part of a running process: credential index, certificates, HTTPS server, configurations.

Started by the operator (``credward operator run --webhook-port``) or alone
(``python -m credward.webhook``). Order matters: certificates are loaded
before the server listens, and the configurations point the API server at the
server only once it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from kubernetes_asyncio import client, config

from credward.webhook.accounts import WorkloadAccounts
from credward.webhook.app import Admission, AdmissionApp
from credward.webhook.configuration import Configurations
from credward.webhook.credentials import CredentialIndex
from credward.webhook.settings import WebhookSettings
from credward.webhook.tls import ServingContext, TLSManager

log = logging.getLogger(__name__)


async def load_config() -> None:
    """In-cluster service account if present, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop someone else owns: the host process handles signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebhookRuntime:
    def __init__(self, settings: WebhookSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self._api = api
        self.credentials = CredentialIndex(api)
        self.accounts = WorkloadAccounts(api, settings)
        self.configurations = Configurations(api, settings)
        self.serving = ServingContext()
        self.tls = TLSManager(api, settings, self.configurations, self.serving)
        self.app = AdmissionApp(Admission(self.credentials, settings.injection))
        self._server: _EmbeddedServer | None = None
        self._serve_task: asyncio.Task[None] | None = None

    @classmethod
    async def start_from_settings(cls, settings: WebhookSettings, *, leading: bool = True) -> WebhookRuntime:
        await load_config()
        runtime = cls(settings, client.ApiClient())
        try:
            await runtime.start(leading=leading)
        except BaseException:
            await runtime.stop()
            raise
        return runtime

    async def start(self, *, leading: bool = True) -> None:
        """Serve admission; with ``leading`` also keep the certificates, the caBundle and automatic accounts.

        A standby (``leading=False``) serves the stored certificate and writes nothing, except the
        very first certificates when none are stored yet (before any replica leads; concurrent
        replicas settle that by optimistic concurrency); :meth:`lead` makes it the writer.
        """
        await self.credentials.start()
        if leading or not await self.tls.follow():
            await self.tls.sync(publish=False)
        uconfig = uvicorn.Config(
            self.app,
            host=self.settings.bind,
            port=self.settings.port,
            lifespan="off",
            log_config=None,
            access_log=False,
            ssl_context_factory=lambda _config, _default: self.serving.base,
            timeout_keep_alive=30,
        )
        self._server = _EmbeddedServer(uconfig)
        self._serve_task = asyncio.create_task(self._server.serve(), name="credward-webhook-server")
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()  # raises why it could not listen
                raise RuntimeError("the webhook server stopped while starting")
            await asyncio.sleep(0.02)
        self.tls.leading = leading
        if leading:
            await self.tls.sync()
            self.accounts.start()
        self.tls.start()
        log.info(
            "webhook serving on %s:%d (%s)", self.settings.bind, self.settings.port, self.settings.url or "service"
        )

    async def lead(self) -> None:
        """This replica became the leader: publish the caBundle now, then renew certificates and create accounts."""
        await self.tls.sync()
        self.tls.leading = True
        self.accounts.start()

    async def stop(self, *, remove_configurations: bool = False) -> None:
        """Stop serving. The configurations stay (opted-in pods wait for a replica) unless asked to remove them."""
        await self.accounts.stop()
        await self.tls.stop()
        if remove_configurations:
            await self.configurations.delete()
        if self._server is not None:
            self._server.should_exit = True
        if self._serve_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        await self.credentials.stop()
        await self._api.close()

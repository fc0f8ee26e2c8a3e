"""kopf wiring: which events trigger a reconcile. No decisions here.

Only event-watching handlers are used: they keep no progress annotations and
need no finalizers, so an operator restart with up-to-date objects writes
nothing. Owned Secrets are watched too (selected by label in the API server),
so a deleted or edited Secret is repaired within moments.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from credward.api import CREDENTIAL_PLURAL, GROUP, LABEL_CREDENTIAL, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from credward.operator.controller import CredentialController
from credward.operator.kube import Kube
from credward.operator.settings import OperatorSettings
from credward.webhook import WebhookRuntime, WebhookSettings

log = logging.getLogger(__name__)


def build_registry(settings: OperatorSettings, webhook: WebhookSettings | None = None) -> kopf.OperatorRegistry:
    """A registry with credward's handlers, bound to ``settings`` (no module-level state)."""
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}

    @kopf.on.startup(registry=registry)
    async def startup(**kwargs: Any) -> None:
        kopf_settings: kopf.OperatorSettings = kwargs["settings"]
        kopf_settings.posting.enabled = False  # credward records its own events; kopf's would repeat them
        # Filter Secrets in the API server, not here: the operator never receives other Secrets at all.
        kopf_settings.watching.label_selectors["secrets"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        kube_cm = Kube.connect(settings.field_manager)
        state["kube_cm"] = kube_cm
        state["controller"] = CredentialController(await kube_cm.__aenter__(), settings)
        if webhook is not None:  # the admission webhook (docs/webhook.md) runs in the operator's event loop
            state["webhook"] = await WebhookRuntime.start_from_settings(webhook)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The Pod's ServiceAccount in a cluster, else $KUBECONFIG (as kubectl does)."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        return info

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        webhook_runtime: WebhookRuntime | None = state.pop("webhook", None)
        if webhook_runtime is not None:
            await webhook_runtime.stop()
        controller: CredentialController | None = state.get("controller")
        if controller is not None:
            controller.requeue.close()
        kube_cm = state.pop("kube_cm", None)
        if kube_cm is not None:
            await kube_cm.__aexit__(None, None, None)

    @kopf.on.event(GROUP, VERSION, CREDENTIAL_PLURAL, id="credential", registry=registry)
    async def credential_event(**kwargs: Any) -> None:
        controller: CredentialController = state["controller"]
        namespace, name = kwargs["namespace"], kwargs["name"]
        if kwargs["type"] == "DELETED":
            controller.forget(namespace, name)
            return
        await controller.reconcile(namespace, name)

    @kopf.on.event("", "v1", "secrets", labels={LABEL_MANAGED_BY: MANAGED_BY}, id="owned-secret", registry=registry)
    async def owned_secret_event(**kwargs: Any) -> None:
        credential = kwargs["labels"].get(LABEL_CREDENTIAL)
        if credential and kwargs["type"] in ("MODIFIED", "DELETED"):
            await state["controller"].reconcile(kwargs["namespace"], credential)

    return registry

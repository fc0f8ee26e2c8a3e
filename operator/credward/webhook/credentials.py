"""What admission knows about credentials: a watch-fed index, read-through on a miss.

Admission must answer in milliseconds, so it reads a local copy of every
ServiceAccountCredential (list, then watch from that resourceVersion; a 410
re-lists). A pod naming a credential the copy lacks is not refused on the
copy's word: one GET asks the API server first, so a credential created a
moment before its pod is always found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from credward.api import CREDENTIAL_PLURAL, GROUP, VERSION
from credward.domain.injection import CredentialView
from credward.errors import TransientError

log = logging.getLogger(__name__)


class CredentialLookup(Protocol):
    async def get(self, namespace: str, name: str) -> CredentialView | None:
        """None when it does not exist; :class:`TransientError` when that cannot be known right now."""
        ...

    def managed_secrets(self, namespace: str) -> Mapping[str, str]:
        """Secret name -> credential name, for the namespace's credentials."""
        ...


class CredentialIndex:
    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._by_ns: dict[str, dict[str, CredentialView]] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    # -- reading -------------------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> CredentialView | None:
        view = self._by_ns.get(namespace, {}).get(name)
        if view is not None:
            return view
        try:
            obj: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, CREDENTIAL_PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise TransientError(f"reading ServiceAccountCredential {namespace}/{name}: HTTP {exc.status}") from None
        view = CredentialView.from_manifest(obj)
        self._put(view)
        return view

    def managed_secrets(self, namespace: str) -> Mapping[str, str]:
        return self._secrets.get(namespace, {})

    # -- keeping the copy ----------------------------------------------------------------------

    def _put(self, view: CredentialView) -> None:
        self._by_ns.setdefault(view.namespace, {})[view.name] = view
        self._reindex(view.namespace)

    def _drop(self, namespace: str, name: str) -> None:
        self._by_ns.get(namespace, {}).pop(name, None)
        self._reindex(namespace)

    def _reindex(self, namespace: str) -> None:
        self._secrets[namespace] = {v.secret_name: v.name for v in self._by_ns.get(namespace, {}).values()}

    async def _list(self) -> str:
        listing: dict[str, Any] = await self._custom.list_cluster_custom_object(GROUP, VERSION, CREDENTIAL_PLURAL)
        self._by_ns.clear()
        for obj in listing.get("items") or ():
            view = CredentialView.from_manifest(obj)
            self._by_ns.setdefault(view.namespace, {})[view.name] = view
        self._secrets.clear()
        for namespace in self._by_ns:
            self._reindex(namespace)
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                version = await self._list()
                stream = watch.Watch()
                async for event in stream.stream(
                    self._custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    CREDENTIAL_PLURAL,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                ):
                    backoff = 0.5
                    kind, obj = event["type"], event["object"]
                    if kind == "BOOKMARK":
                        continue
                    view = CredentialView.from_manifest(obj)
                    if kind == "DELETED":
                        self._drop(view.namespace, view.name)
                    else:
                        self._put(view)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # re-list and watch again; admission reads through meanwhile
                why = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else repr(exc)
                log.warning("credential watch for admission failed (%s); re-listing in %.1fs", why, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def start(self) -> None:
        """Start watching; wait (at most 30 s) for the first listing. Until then, lookups read through."""
        self._task = asyncio.create_task(self._run(), name="credward-webhook-credentials")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await self.synced.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

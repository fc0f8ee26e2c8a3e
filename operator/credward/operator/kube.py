"""The few Kubernetes API calls the operator makes, with every client error sorted into credward's tree.

This is the edge: ``ApiException``, ``aiohttp.ClientError`` and timeouts never
pass it. 404 on a read is an answer (None); otherwise:

- no answer, a timeout, 5xx, 429, 409 -> :class:`KubeUnavailable` (retry with backoff);
- 403 NamespaceTerminating -> :class:`NamespaceTerminating` (the namespace is going: stop, quietly);
- 404 on a write -> :class:`Gone`;
- any other 4xx -> :class:`KubeRefused` with the API server's own message (Secret values scrubbed).

Writes use server-side apply with one field manager, so credward owns exactly
the fields it sets and removes the ones it stops setting. Finalizers use a
merge patch with a resourceVersion precondition: a patch never creates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from credward.api import CREDENTIAL_KIND, CREDENTIAL_PLURAL, GROUP, ROLEBINDING_KIND, ROLEBINDING_PLURAL, VERSION
from credward.domain.credential import FINALIZER, Event
from credward.errors import CredwardError, Gone, KubeRefused, KubeUnavailable, NamespaceTerminating

log = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
REPORTING_CONTROLLER = "credward.io/operator"


class CoreApi(Protocol):
    """The CoreV1Api methods credward calls (injectable: unit tests pass a failing one)."""

    async def read_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> Any: ...
    async def patch_namespaced_secret(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    async def create_namespaced_event(self, namespace: str, body: Any, **kwargs: Any) -> Any: ...
    async def list_namespaced_secret(self, namespace: str, **kwargs: Any) -> Any: ...
    async def list_secret_for_all_namespaces(self, **kwargs: Any) -> Any: ...


class CustomApi(Protocol):
    """The CustomObjectsApi methods credward calls."""

    async def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any: ...
    async def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any: ...
    async def list_cluster_custom_object(self, *args: Any, **kwargs: Any) -> Any: ...
    async def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any: ...
    async def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> Any: ...


async def load_config() -> None:
    """In-cluster service account if present, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _scrub(text: str, secrets: Collection[str]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "<redacted>")
    return text


def map_api_exception(exc: ApiException, what: str, secrets: Collection[str] = ()) -> CredwardError:
    """One ``ApiException`` as credward's error; ``secrets`` are values that must not survive into the message."""
    body = _status_body(exc)
    causes = (body.get("details") or {}).get("causes") or ()
    message = _scrub(str(body.get("message") or exc.reason or "no message"), secrets)[:1024]
    status = int(exc.status or 0)
    if status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes if isinstance(c, dict)):
        return NamespaceTerminating(f"{what}: the namespace is being deleted")
    if status == 404:
        return Gone(f"{what}: not found")
    if status == 429:
        headers: Mapping[str, str] = exc.headers or {}
        retry = headers.get("Retry-After")
        try:
            delay = float(retry) if retry else 5.0
        except ValueError:
            delay = 5.0
        return KubeUnavailable(f"{what}: HTTP 429 {message}", delay=delay)
    if status == 409:
        return KubeUnavailable(f"{what}: HTTP 409 {message}", delay=1.0)
    if status == 0 or status >= 500:
        return KubeUnavailable(f"{what}: HTTP {status} {message}", delay=5.0)
    return KubeRefused(f"HTTP {status} {message}", status)


@asynccontextmanager
async def edge(what: str, secrets: Collection[str] = ()) -> AsyncIterator[None]:
    """Translate whatever the Kubernetes client raises inside into credward's tree."""
    try:
        yield
    except ApiException as exc:
        raise map_api_exception(exc, what, secrets) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise KubeUnavailable(f"{what}: {type(exc).__name__}: {_scrub(str(exc), secrets)}", delay=5.0) from None


_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _skip_env_lookups(api: client.ApiClient) -> None:
    """No ~/.netrc and proxy lookup per request when no proxy is configured.

    The client's aiohttp session trusts the environment, which costs two thread hops per request
    (a ``.netrc`` parse, a proxy lookup): most of the operator's CPU at a thousand credentials.
    A proxy from the kubeconfig is passed explicitly and still works; one from the environment
    keeps the lookups.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    rest = getattr(api, "rest_client", None)
    session = getattr(rest, "pool_manager", None)
    if rest is None or not isinstance(session, aiohttp.ClientSession) or not session.trust_env:
        return
    connector = session.connector
    if connector is None:
        return
    session.detach()  # the connector (TLS settings, pool) moves to the new session
    rest.pool_manager = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=2**21)


class RateLimit:
    """Client-side token bucket, as client-go's ``QPS``/``Burst``: at most ``burst`` at once, ``qps`` sustained.

    Keeps a burst of work (a thousand credentials created together, a restart) inside what the
    API server's priority-and-fairness admits, so the operator waits its turn here instead of
    collecting HTTP 429s. ``qps <= 0`` turns it off.
    """

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(burst, 1)
        self._tokens = float(self.burst)
        self._stamp: float | None = None

    def reserve(self, now: float) -> float:
        """Take a token at time ``now``; the seconds to wait before using it."""
        if self.qps <= 0:
            return 0.0
        if self._stamp is None:
            self._stamp = now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> None:
        delay = self.reserve(asyncio.get_running_loop().time())
        if delay > 0:
            await asyncio.sleep(delay)


class Kube:
    """Typed wrapper over the API calls credward makes; one instance per operator."""

    def __init__(
        self,
        core: CoreApi,
        custom: CustomApi,
        field_manager: str,
        serialize: Any = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._core = core
        self._custom = custom
        self._field_manager = field_manager
        self._serialize = serialize or (lambda obj: obj)
        self._limit = rate_limit or RateLimit(0, 1)

    @staticmethod
    @asynccontextmanager
    async def connect(field_manager: str, rate_limit: RateLimit | None = None) -> AsyncIterator[Kube]:
        await load_config()
        async with client.ApiClient() as api:
            _skip_env_lookups(api)
            yield Kube(
                client.CoreV1Api(api),
                client.CustomObjectsApi(api),
                field_manager,
                api.sanitize_for_serialization,
                rate_limit,
            )

    @asynccontextmanager
    async def _call(self, what: str, secrets: Collection[str] = ()) -> AsyncIterator[None]:
        """One API request: wait for the rate limit, then translate its errors (:func:`edge`)."""
        await self._limit.wait()
        async with edge(what, secrets):
            yield

    async def get_credential(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            async with self._call(f"reading {CREDENTIAL_KIND} {namespace}/{name}"):
                obj: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, CREDENTIAL_PLURAL, name
                )
        except Gone:
            return None
        return obj

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            async with self._call(f"reading Secret {namespace}/{name}"):
                answer = await self._core.read_namespaced_secret(name, namespace, _preload_content=False)
                return await self._json(answer)
        except Gone:
            return None

    async def _json(self, answer: Any) -> dict[str, Any]:
        """A response read without the client's model classes (parsing those dates costs more than the request).

        Called inside :meth:`_call`, so a failure status raises the same ``ApiException`` the client would.
        """
        if not hasattr(answer, "status") or not hasattr(answer, "read"):
            obj: dict[str, Any] = self._serialize(answer)  # an injected client answered with a model or a dict
            return obj
        data = await answer.read()
        if not 200 <= answer.status <= 299:
            exc = ApiException(status=answer.status, reason=answer.reason)
            exc.body = data.decode(errors="replace")
            exc.headers = answer.headers
            raise exc
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    async def list_all(
        self, plural: str, namespaces: tuple[str, ...] = (), label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of a kind (``secrets`` or a credward plural) in ``namespaces`` (empty: all), one list each."""
        items: list[dict[str, Any]] = []
        selector = {"label_selector": label_selector} if label_selector else {}
        for namespace in namespaces or (None,):
            async with self._call(f"listing {plural} in {namespace or 'every namespace'}"):
                if namespace is None:
                    answer = await (
                        self._core.list_secret_for_all_namespaces(_preload_content=False, **selector)
                        if plural == "secrets"
                        else self._custom.list_cluster_custom_object(GROUP, VERSION, plural, **selector)
                    )
                elif plural == "secrets":
                    answer = await self._core.list_namespaced_secret(namespace, _preload_content=False, **selector)
                else:
                    answer = await self._custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, **selector
                    )
                listing = await self._json(answer) if plural == "secrets" else answer
            items.extend(listing.get("items") or [])
        return items

    async def list_bindings(self, namespace: str, account: str | None = None) -> list[dict[str, Any]]:
        """The RoleBindings in ``namespace`` (only those naming ``account``, if given)."""
        async with self._call(f"listing {ROLEBINDING_KIND}s in {namespace}"):
            listing: dict[str, Any] = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, ROLEBINDING_PLURAL
            )
        items: list[dict[str, Any]] = listing.get("items") or []
        if account is not None:
            items = [b for b in items if (b.get("spec") or {}).get("serviceAccount") == account]
        return items

    async def apply_secret(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; the Secret as the API server now holds it."""
        meta = manifest["metadata"]
        values = [base64.b64decode(v).decode(errors="replace") for v in (manifest.get("data") or {}).values()]
        # Never include the body in a message: it holds the client secret.
        async with self._call(f"applying Secret {meta['namespace']}/{meta['name']}", values):
            answer = await self._core.patch_namespaced_secret(
                meta["name"],
                meta["namespace"],
                manifest,
                field_manager=self._field_manager,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
            )
            return await self._json(answer)

    async def _apply_status(
        self, plural: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        try:
            async with self._call(f"writing status of {kind} {namespace}/{name}"):
                answer: dict[str, Any] = await self._custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    body,
                    field_manager=self._field_manager,
                    force=True,
                    _content_type=APPLY,
                )
        except Gone:
            return None  # deleted meanwhile: nothing left to report on
        return answer

    async def apply_credential_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Server-side apply of the status; the credential as the API server now holds it (None: it is gone)."""
        return await self._apply_status(CREDENTIAL_PLURAL, CREDENTIAL_KIND, namespace, name, status)

    async def apply_binding_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        return await self._apply_status(ROLEBINDING_PLURAL, ROLEBINDING_KIND, namespace, name, status)

    async def _patch_finalizers(self, body: dict[str, Any], finalizers: list[str]) -> dict[str, Any]:
        meta = body["metadata"]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        async with self._call(f"updating finalizers of {CREDENTIAL_KIND} {meta['namespace']}/{meta['name']}"):
            answer: dict[str, Any] = await self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], CREDENTIAL_PLURAL, meta["name"], patch, _content_type=MERGE
            )
        return answer

    async def add_finalizer(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The credential with credward's finalizer added (None if it had it already)."""
        current = list(body["metadata"].get("finalizers") or [])
        if FINALIZER not in current:
            return await self._patch_finalizers(body, [*current, FINALIZER])
        return None

    async def remove_finalizer(self, body: dict[str, Any]) -> dict[str, Any] | None:
        current = list(body["metadata"].get("finalizers") or [])
        if FINALIZER in current:
            try:
                return await self._patch_finalizers(body, [f for f in current if f != FINALIZER])
            except Gone:
                return None
        return None

    async def post_event(self, involved: dict[str, Any], event: Event) -> None:
        """Record a Kubernetes Event (core/v1, what `kubectl describe` shows). Failures are only logged."""
        meta = involved["metadata"]
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=involved["apiVersion"],
                kind=involved["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            type=event.type,
            reason=event.reason,
            message=event.message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="credward-operator"),
            reporting_component=REPORTING_CONTROLLER,
            reporting_instance="credward-operator",
        )
        try:
            async with self._call(f"recording event {event.reason} on {meta['namespace']}/{meta['name']}"):
                await self._json(
                    await self._core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
                )
        except Gone as exc:
            log.debug("%s", exc)  # the namespace or object is going away: nobody will read it
        except CredwardError as exc:
            log.warning("could not record an event: %s", exc)

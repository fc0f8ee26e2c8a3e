"""The operator's client of the security service's admin API, with its failures sorted into credward's tree.

One small :class:`SecurityService` Protocol is what the controller sees, so
unit tests inject a failing one. :class:`AdminClient` is the real thing over
httpx: wire models from :mod:`credward.api.admin`, bearer token re-read from
its file whenever the kubelet replaces it (projected ServiceAccount tokens
rotate), and every httpx or HTTP failure mapped here, at the edge:

- no answer, a timeout, 5xx, 429 or an answer that does not parse -> :class:`ServiceUnavailable`;
- any other 4xx -> :class:`ServiceRefused` with the service's ``error_description``;
- 404 where it means "no such account" -> ``None`` (or done, for a delete).

Account reads, puts and role-mapping replacements that arrive within a few milliseconds of
each other (a thousand credentials reconciled together) share one ``POST /v1/admin/batch``;
each caller still gets its own answer, as if it had called the account's own endpoint. A
service without that endpoint, or one refusing a batch, is asked one account at a time.

Bodies carry secret hashes, never values; nothing here logs a body or a token.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from credward.api.admin import (
    BATCH_MAX_OPERATIONS,
    AccountIn,
    AccountView,
    BatchIn,
    BatchOperation,
    BatchOut,
    BatchResult,
    RoleMappingsIn,
    ServiceInfo,
)
from credward.errors import ServiceRefused, ServiceUnavailable

log = logging.getLogger(__name__)

ADMIN = "/v1/admin"
BATCH_WINDOW = 0.002  # seconds an idle client waits for more calls to share a request
BATCHES_IN_FLIGHT = 2  # more calls wait for one of these to be answered, then go together
M = TypeVar("M", bound=BaseModel)


class SecurityService(Protocol):
    """What the operator asks of the security service."""

    async def info(self) -> ServiceInfo:
        """The store's id, its size and the hash key's id."""

    async def get_account(self, client_id: str) -> AccountView | None:
        """The account as the service holds it, or None if it holds none."""

    async def put_account(self, client_id: str, account: AccountIn) -> AccountView:
        """Create or replace the account (its role mappings are kept)."""

    async def put_role_mappings(self, client_id: str, mappings: RoleMappingsIn) -> AccountView | None:
        """Replace the account's whole role-mapping set; None if the account does not exist."""

    async def revoke(self, client_id: str) -> bool:
        """Revoke the account now (tells the revocation feed); False if it does not exist."""

    async def delete_account(self, client_id: str) -> None:
        """Remove the account; done too if it was not there."""


class BearerFile(httpx.Auth):
    """``Authorization: Bearer <file content>``, re-read when the file's inode, size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def _current(self) -> str:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot read the admin token file {self._path.name}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._token = self._path.read_text().strip()
            self._stamp = stamp
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        yield request


def _description(response: httpx.Response) -> str:
    """The service's own words for a refusal (RFC 6749-style body), bounded; never the request."""
    try:
        body = response.json()
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict):
        text = str(body.get("error_description") or body.get("detail") or body.get("error") or "")
    return (text or response.reason_phrase or "refused")[:512]


class AdminClient:
    """:class:`SecurityService` over HTTP (httpx)."""

    def __init__(self, http: httpx.AsyncClient, batch_window: float | None = None) -> None:
        self._http = http
        # How long an account call waits for others to share its POST /v1/admin/batch; None: one request each.
        self._window = batch_window or 0.0
        self._batching = batch_window is not None
        self._queue: list[tuple[BatchOperation, asyncio.Future[BatchResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._info: asyncio.Future[ServiceInfo] | None = None

    @staticmethod
    @asynccontextmanager
    async def connect(base_url: str, token_file: Path, request_timeout: float) -> AsyncIterator[AdminClient]:
        async with httpx.AsyncClient(
            base_url=base_url, auth=BearerFile(token_file), timeout=request_timeout, follow_redirects=False
        ) as http:
            yield AdminClient(http, batch_window=BATCH_WINDOW)

    async def _send(
        self, method: str, path: str, body: BaseModel | None = None, read_timeout: float | None = None
    ) -> httpx.Response:
        what = f"{method} {ADMIN}{path}"
        content = body.model_dump_json(by_alias=True, exclude_none=True) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        timeout = self._http.timeout
        if read_timeout is not None:
            timeout = httpx.Timeout(timeout.connect, read=read_timeout, write=timeout.write, pool=timeout.pool)
        try:
            response = await self._http.request(
                method, f"{ADMIN}{path}", content=content, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            raise ServiceUnavailable(f"{what}: the security service did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            delay = _retry_after(response)
            raise ServiceUnavailable(f"{what}: HTTP {response.status_code} {_description(response)}", delay=delay)
        return response

    def _refused(self, method: str, path: str, response: httpx.Response) -> ServiceRefused:
        return ServiceRefused(
            f"{method} {ADMIN}{path}: HTTP {response.status_code}: {_description(response)}", response.status_code
        )

    def _parse(self, model: type[M], response: httpx.Response, what: str) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            fields = ", ".join(sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()}))
            raise ServiceUnavailable(f"{what}: unexpected answer (fields {fields})") from None

    async def info(self) -> ServiceInfo:
        # One request in flight however many reconciles ask at once (a thousand at start-up).
        if self._info is None:
            self._info = asyncio.ensure_future(self._fetch_info())
            self._info.add_done_callback(self._info_done)
        return await asyncio.shield(self._info)

    def _info_done(self, task: asyncio.Future[ServiceInfo]) -> None:
        self._info = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it already

    async def _fetch_info(self) -> ServiceInfo:
        response = await self._send("GET", "/info")
        if response.status_code != 200:
            raise self._refused("GET", "/info", response)
        return self._parse(ServiceInfo, response, "GET /v1/admin/info")

    async def get_account(self, client_id: str) -> AccountView | None:
        result = await self._run(BatchOperation(op="get", client_id=client_id))
        if result.status == 404:
            return None
        return self._view(result, "GET", f"/accounts/{client_id}")

    async def put_account(self, client_id: str, account: AccountIn) -> AccountView:
        result = await self._run(BatchOperation(op="put", client_id=client_id, account=account))
        return self._view(result, "PUT", f"/accounts/{client_id}")

    async def put_role_mappings(self, client_id: str, mappings: RoleMappingsIn) -> AccountView | None:
        result = await self._run(BatchOperation(op="role-mappings", client_id=client_id, mappings=mappings))
        if result.status == 404:
            return None
        return self._view(result, "PUT", f"/accounts/{client_id}/role-mappings")

    def _view(self, result: BatchResult, method: str, path: str) -> AccountView:
        if result.status in (200, 201) and result.account is not None:
            return result.account
        if result.status in (200, 201):
            raise ServiceUnavailable(f"{method} {ADMIN}{path}: unexpected answer (no account)")
        raise ServiceRefused(
            f"{method} {ADMIN}{path}: HTTP {result.status}: {result.error or 'refused'}", result.status
        )

    # -- batching: concurrent account calls become one POST /v1/admin/batch ----------------------------------

    async def _run(self, op: BatchOperation) -> BatchResult:
        if not self._batching:
            return await self._single(op)
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._timer is None and len(self._tasks) < BATCHES_IN_FLIGHT:
            self._timer = asyncio.get_running_loop().call_later(self._window, self._flush)
        # else a batch in flight sends the queue when it is answered: the busier, the bigger the batches
        return await future

    def _take(self) -> list[tuple[BatchOperation, asyncio.Future[BatchResult]]]:
        """The next batch from the queue: at most the maximum, each account and kind of operation once."""
        batch: list[tuple[BatchOperation, asyncio.Future[BatchResult]]] = []
        rest: list[tuple[BatchOperation, asyncio.Future[BatchResult]]] = []
        keys: set[tuple[str, str]] = set()
        for item in self._queue:
            key = (item[0].op, item[0].client_id)
            if len(batch) < BATCH_MAX_OPERATIONS and key not in keys:
                batch.append(item)
                keys.add(key)
            else:
                rest.append(item)
        self._queue = rest
        return batch

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and len(self._tasks) < BATCHES_IN_FLIGHT:
            task = asyncio.get_running_loop().create_task(self._send_batch(self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._queue and self._timer is None:
            self._flush()

    async def _send_batch(self, items: list[tuple[BatchOperation, asyncio.Future[BatchResult]]]) -> None:
        ops = tuple(op for op, _ in items)
        try:
            response = await self._send("POST", "/batch", BatchIn(operations=ops), self._batch_timeout(len(ops)))
            if response.status_code in (404, 405):
                log.info("the security service has no batch endpoint: one request per account call")
                self._batching = False
            if response.status_code in (400, 404, 405):
                # No batch endpoint, or one operation it refuses: each on its own, so each caller gets its answer.
                await asyncio.gather(*(self._settle(f, self._single(op)) for op, f in items))
                return
            if response.status_code != 200:
                raise self._refused("POST", "/batch", response)
            results = self._parse(BatchOut, response, f"POST {ADMIN}/batch").results
            if [r.client_id for r in results] != [op.client_id for op in ops]:
                raise ServiceUnavailable(f"POST {ADMIN}/batch: unexpected answer (results do not match operations)")
        except (ServiceUnavailable, ServiceRefused) as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # a bug or cancellation: no caller may wait forever
            for _, future in items:
                if not future.done():
                    future.set_exception(ServiceUnavailable(f"POST {ADMIN}/batch: {type(exc).__name__}"))
            raise
        for (_, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _settle(self, future: asyncio.Future[BatchResult], call: Awaitable[BatchResult]) -> None:
        try:
            result = await call
        except (ServiceUnavailable, ServiceRefused) as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    def _batch_timeout(self, size: int) -> float | None:
        base = self._http.timeout.read
        return None if base is None else base * (1 + size / 64)

    async def _single(self, op: BatchOperation) -> BatchResult:
        """``op`` through its own endpoint (a service without the batch endpoint, or a refused batch)."""
        path = f"/accounts/{op.client_id}" + ("/role-mappings" if op.op == "role-mappings" else "")
        method = "GET" if op.op == "get" else "PUT"
        response = await self._send(method, path, op.account or op.mappings)
        status = response.status_code
        if status in (200, 201):
            return BatchResult(client_id=op.client_id, status=status, account=self._parse(AccountView, response, path))
        return BatchResult(client_id=op.client_id, status=status, error=_description(response))

    async def revoke(self, client_id: str) -> bool:
        path = f"/accounts/{client_id}/revoke"
        response = await self._send("POST", path)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 201, 204):
            raise self._refused("POST", path, response)
        return True

    async def delete_account(self, client_id: str) -> None:
        path = f"/accounts/{client_id}"
        response = await self._send("DELETE", path)
        if response.status_code not in (200, 204, 404):
            raise self._refused("DELETE", path, response)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 1.0), 300.0)
    except ValueError:
        return 5.0

"""The operator's client of the security service's admin API, with its failures sorted into credward's tree.

One small :class:`SecurityService` Protocol is what the controller sees, so
unit tests inject a failing one. :class:`AdminClient` is the real thing over
httpx: wire models from :mod:`credward.api.admin`, bearer token re-read from
its file whenever the kubelet replaces it (projected ServiceAccount tokens
rotate), and every httpx or HTTP failure mapped here, at the edge:

- no answer, a timeout, 5xx, 429 or an answer that does not parse -> :class:`ServiceUnavailable`;
- any other 4xx -> :class:`ServiceRefused` with the service's ``error_description``;
- 404 where it means "no such account" -> ``None`` (or done, for a delete).

Bodies carry secret hashes, never values; nothing here logs a body or a token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from credward.api.admin import AccountIn, AccountView, RoleMappingsIn, ServiceInfo
from credward.errors import ServiceRefused, ServiceUnavailable

log = logging.getLogger(__name__)

ADMIN = "/v1/admin"
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

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @staticmethod
    @asynccontextmanager
    async def connect(base_url: str, token_file: Path, request_timeout: float) -> AsyncIterator[AdminClient]:
        async with httpx.AsyncClient(
            base_url=base_url, auth=BearerFile(token_file), timeout=request_timeout, follow_redirects=False
        ) as http:
            yield AdminClient(http)

    async def _send(self, method: str, path: str, body: BaseModel | None = None) -> httpx.Response:
        what = f"{method} {ADMIN}{path}"
        content = body.model_dump_json(by_alias=True, exclude_none=True) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            response = await self._http.request(method, f"{ADMIN}{path}", content=content, headers=headers)
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
        response = await self._send("GET", "/info")
        if response.status_code != 200:
            raise self._refused("GET", "/info", response)
        return self._parse(ServiceInfo, response, "GET /v1/admin/info")

    async def get_account(self, client_id: str) -> AccountView | None:
        path = f"/accounts/{client_id}"
        response = await self._send("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused("GET", path, response)
        return self._parse(AccountView, response, f"GET {ADMIN}{path}")

    async def put_account(self, client_id: str, account: AccountIn) -> AccountView:
        path = f"/accounts/{client_id}"
        response = await self._send("PUT", path, account)
        if response.status_code not in (200, 201):
            raise self._refused("PUT", path, response)
        return self._parse(AccountView, response, f"PUT {ADMIN}{path}")

    async def put_role_mappings(self, client_id: str, mappings: RoleMappingsIn) -> AccountView | None:
        path = f"/accounts/{client_id}/role-mappings"
        response = await self._send("PUT", path, mappings)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused("PUT", path, response)
        return self._parse(AccountView, response, f"PUT {ADMIN}{path}")

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

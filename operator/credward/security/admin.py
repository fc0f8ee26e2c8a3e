"""The admin API the operator pushes accounts to: the wire models of :mod:`credward.api.admin` and the store calls.

Bodies are validated strictly (``"300"`` is no number, ``true`` no integer) by the same models the operator
sends and ``/openapi.json`` publishes, so the service accepts exactly what the CRDs admit. Bodies carry
secret *hashes* with their ids and times, never secret values. Every write invalidates this replica's
cached view of the account at once. Refusals are credward errors (:class:`~credward.errors.BadAdminRequest`,
:class:`~credward.errors.NotFound`), answered at :mod:`credward.security.edge`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from credward.api.admin import (
    CLIENT_ID_PATTERN,
    AccountIn,
    AccountView,
    BatchIn,
    BatchOut,
    BatchResult,
    RoleMappingsIn,
    SecretView,
    ServiceInfo,
)
from credward.domain.claims import identity_for
from credward.errors import BadAdminRequest, NotFound, ServiceError
from credward.security.accounts import AccountCache
from credward.security.feed import RevocationFeed
from credward.security.metrics import Metrics
from credward.security.model import Account, AccountStatus, RevocationEvent, SecretUsage
from credward.security.store.base import Store
from credward.security.usage import UsageTracker, merge

M = TypeVar("M", bound=BaseModel)
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


def check_client_id(client_id: str) -> str:
    """A client id as the path carries it: :data:`~credward.api.admin.CLIENT_ID_PATTERN` (so no ``.``, ``%``, ``/``)."""
    if not _CLIENT_ID.fullmatch(client_id):
        raise BadAdminRequest("clientId: must be 1-128 letters, digits, '_' or '-', starting with a letter or digit")
    return client_id


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "body"
    if error["type"] == "literal_error" and error.get("input") == "grant":
        return f"{where}: service accounts can never hold the grant verb"
    return f"{where}: {error['msg']}"


def parse_body(model: type[M], body: bytes) -> M:
    """``body`` as ``model``, validated strictly; :class:`BadAdminRequest` names every field that is wrong."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise BadAdminRequest("; ".join(_problem(e) for e in exc.errors())) from None


def account_view(account: Account, max_token_ttl: int, usage: Mapping[str, SecretUsage] | None = None) -> AccountView:
    """An account as the admin API shows it: secret ids, times and use, never hashes."""
    used = usage or {}
    return AccountView(
        client_id=account.client_id,
        identity=account.identity,
        display_name=account.display_name,
        namespace=account.namespace or None,
        name=account.name or None,
        status=account.status.value,
        expires_at=account.expires_at,
        audiences=account.audiences,
        token_ttl_seconds=account.token_ttl_seconds,
        effective_token_ttl_seconds=min(account.token_ttl_seconds, max_token_ttl),
        groups=account.groups,
        secrets=tuple(
            SecretView(
                id=s.id,
                created_at=s.created_at,
                not_after=s.not_after,
                last_used_at=used[s.id].last_used_at if s.id in used else None,
                distinct_callers=used[s.id].distinct_callers if s.id in used else 0,
            )
            for s in account.secrets
        ),
        role_mappings=account.role_mappings,
        updated_at=account.updated_at,
    )


class AdminService:
    """The admin API's operations over the store; each raises :class:`NotFound` for a missing account."""

    def __init__(
        self,
        store: Store,
        accounts: AccountCache,
        feed: RevocationFeed,
        metrics: Metrics,
        *,
        issuer_host: str,
        max_token_ttl: int,
        hash_key_id: str,
        usage: UsageTracker | None = None,
        usage_window: float = 900.0,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.feed = feed
        self.metrics = metrics
        self.issuer_host = issuer_host
        self.max_token_ttl = max_token_ttl
        self.hash_key_id = hash_key_id
        self.usage = usage if usage is not None else UsageTracker(store, metrics)
        self.usage_window = timedelta(seconds=usage_window)

    async def info(self) -> ServiceInfo:
        stored = await self.store.info()
        return ServiceInfo(
            store_id=stored.store_id,
            accounts=stored.accounts,
            hash_key_id=self.hash_key_id,
            max_token_ttl_seconds=self.max_token_ttl,
        )

    async def _account(self, client_id: str) -> Account:
        account = await self.store.get_account(client_id)
        if account is None:
            raise NotFound(f"no account {client_id}")
        return account

    async def get(self, client_id: str, now: datetime) -> AccountView:
        account = await self._account(client_id)
        return account_view(account, self.max_token_ttl, await self._usage(account, now))

    async def _usage(self, account: Account, now: datetime) -> dict[str, SecretUsage]:
        """The store's usage of each secret, with what this replica has not flushed yet on top."""
        since = now - self.usage_window
        stored = await self.store.secret_usage(account.client_id, since)
        found: dict[str, SecretUsage] = {}
        for secret in account.secrets:
            pending = self.usage.pending(account.client_id, secret.id)
            merged = merge(stored.get(secret.id), pending, since.timestamp())
            if merged is not None:
                found[secret.id] = merged
        return found

    async def put_account(self, client_id: str, data: AccountIn, now: datetime) -> tuple[AccountView, bool]:
        """Create or replace the account (its role mappings stay); True if it was created."""
        existing = await self.store.get_account(client_id)
        account = Account(
            client_id=client_id,
            identity=data.identity or identity_for(client_id, self.issuer_host),
            display_name=data.display_name,
            namespace=data.namespace or "",
            name=data.name or "",
            status=AccountStatus(data.status),
            expires_at=data.expires_at,
            audiences=data.audiences,
            token_ttl_seconds=data.token_ttl_seconds,
            groups=data.groups,
            secrets=data.secrets,
            role_mappings=existing.role_mappings if existing else (),
            updated_at=now,
        )
        if existing is not None and replace(account, updated_at=existing.updated_at) == existing:
            # The same account again (a restarted operator pushes every one once): no store write.
            return account_view(existing, self.max_token_ttl, await self._usage(existing, now)), False
        await self.store.put_account(account)
        self.accounts.invalidate(client_id)
        return account_view(account, self.max_token_ttl, await self._usage(account, now)), existing is None

    async def set_role_mappings(self, client_id: str, data: RoleMappingsIn, now: datetime) -> AccountView:
        await self._account(client_id)
        await self.store.set_role_mappings(client_id, data.mappings)
        self.accounts.invalidate(client_id)
        return await self.get(client_id, now)

    async def revoke(self, client_id: str, now: datetime) -> RevocationEvent:
        await self._account(client_id)
        event = await self.store.revoke_account(client_id, now)
        self.accounts.invalidate(client_id)
        self.metrics.revocations.labels(kind="account").inc()
        self.feed.notify(event.cursor)
        return event

    async def delete(self, client_id: str) -> None:
        existed = await self.store.delete_account(client_id)
        self.accounts.invalidate(client_id)
        self.usage.forget(client_id)
        if not existed:
            raise NotFound(f"no account {client_id}")

    async def batch(self, data: BatchIn, now: datetime) -> BatchOut:
        """Each operation in order, answered as its own endpoint would (a refusal ends only that one)."""
        results: list[BatchResult] = []
        for op in data.operations:
            try:
                status = 200
                if op.op == "get":
                    view = await self.get(op.client_id, now)
                elif op.op == "put" and op.account is not None:
                    view, created = await self.put_account(op.client_id, op.account, now)
                    status = 201 if created else 200
                elif op.mappings is not None:
                    view = await self.set_role_mappings(op.client_id, op.mappings, now)
                else:  # the model refuses this; never guess
                    raise BadAdminRequest(f"operations: {op.op} without its body")
            except ServiceError as exc:
                results.append(BatchResult(client_id=op.client_id, status=exc.status_code, error=str(exc)))
                continue
            results.append(BatchResult(client_id=op.client_id, status=status, account=view))
        return BatchOut(results=tuple(results))

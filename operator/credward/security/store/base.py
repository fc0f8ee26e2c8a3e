"""The storage interface every backend implements.

Kept small on purpose: the token endpoint needs one read (``get_account``) and
one check (``is_token_revoked``); everything else is the admin path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from credward.api.admin import RoleMapping
from credward.security.model import Account, RevocationEvent, SecretUsage, SecretUse, StoreInfo


class Store(Protocol):
    async def migrate(self) -> None:
        """Bring the schema to the newest version (idempotent; versioned migrations)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the backend cannot answer (used by /readyz)."""

    async def info(self) -> StoreInfo:
        """The store's id (made when it was first migrated) and its number of accounts."""

    async def get_account(self, client_id: str) -> Account | None: ...

    async def put_account(self, account: Account) -> None:
        """Create or replace an account and its secret hashes (not its role mappings)."""

    async def set_role_mappings(self, client_id: str, mappings: tuple[RoleMapping, ...]) -> None:
        """Replace all role mappings of an account (the operator pushes the full set)."""

    async def delete_account(self, client_id: str) -> bool:
        """Delete an account; True if it existed."""

    async def revoke_account(self, client_id: str, at: datetime) -> RevocationEvent:
        """Mark the account revoked and append a feed entry."""

    async def revoke_token(self, jti: str, client_id: str, expires_at: datetime, at: datetime) -> RevocationEvent:
        """Remember a revoked token until it expires and append a feed entry."""

    async def is_token_revoked(self, jti: str) -> bool: ...

    async def revocations_since(self, cursor: int, limit: int = 500) -> list[RevocationEvent]:
        """Feed entries with ``cursor`` greater than the given one, oldest first."""

    async def latest_cursor(self) -> int:
        """The greatest cursor of the feed so far (0 for an empty feed)."""

    async def purge_expired(self, now: datetime) -> int:
        """Forget revoked tokens and feed entries past their expiry; returns how many rows went."""

    async def record_usage(self, uses: Sequence[SecretUse]) -> None:
        """Merge a batch of secret uses in one transaction: per (account, secret, caller) the latest time wins."""

    async def secret_usage(self, client_id: str, callers_since: datetime) -> Mapping[str, SecretUsage]:
        """Per secret id of the account: its last use ever, and how many callers used it since ``callers_since``."""

    async def purge_usage(self, before: datetime) -> int:
        """Forget per-caller uses older than ``before`` (each secret's last use stays until its account goes)."""

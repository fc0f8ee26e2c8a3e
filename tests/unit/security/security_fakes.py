"""Unit fakes and fixtures for the security service: an in-memory ``Store`` (unit tests only; integration
tests use real SQLite and PostgreSQL), settings in a temp dir, a fake clock and a ready service."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from credward.domain.secrets import hash_secret, new_client_id, new_client_secret
from credward.security.adminauth import BearerFileAuthenticator
from credward.security.app import CredwardApp, create_app
from credward.security.model import (
    Account,
    AccountStatus,
    Permission,
    RevocationEvent,
    RevocationKind,
    RoleMapping,
    SecretRecord,
)
from credward.security.settings import AdminAuthMode, Settings


class MemoryStore:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.revoked_tokens: dict[str, datetime] = {}
        self.events: list[RevocationEvent] = []
        self.reads = 0

    async def migrate(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def get_account(self, client_id: str) -> Account | None:
        self.reads += 1
        return self.accounts.get(client_id)

    async def put_account(self, account: Account) -> None:
        old = self.accounts.get(account.client_id)
        mappings = old.role_mappings if old else ()
        self.accounts[account.client_id] = dataclasses.replace(account, role_mappings=mappings)

    async def set_role_mappings(self, client_id: str, mappings: tuple[RoleMapping, ...]) -> None:
        self.accounts[client_id] = dataclasses.replace(self.accounts[client_id], role_mappings=mappings)

    async def delete_account(self, client_id: str) -> bool:
        return self.accounts.pop(client_id, None) is not None

    def _append(
        self, kind: RevocationKind, subject: str, client_id: str, at: datetime, exp: datetime | None
    ) -> RevocationEvent:
        event = RevocationEvent(len(self.events) + 1, kind, subject, client_id, at, exp)
        self.events.append(event)
        return event

    async def revoke_account(self, client_id: str, at: datetime) -> RevocationEvent:
        self.accounts[client_id] = dataclasses.replace(self.accounts[client_id], status=AccountStatus.REVOKED)
        return self._append(RevocationKind.ACCOUNT, client_id, client_id, at, None)

    async def revoke_token(self, jti: str, client_id: str, expires_at: datetime, at: datetime) -> RevocationEvent:
        self.revoked_tokens[jti] = expires_at
        return self._append(RevocationKind.TOKEN, jti, client_id, at, expires_at)

    async def is_token_revoked(self, jti: str) -> bool:
        return jti in self.revoked_tokens

    async def revocations_since(self, cursor: int, limit: int = 500) -> list[RevocationEvent]:
        return [e for e in self.events if e.cursor > cursor][:limit]


HASH_KEY = b"k" * 32
ADMIN_TOKEN = "unit-admin-token-0123456789"
ISSUER = "https://issuer.test"


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Client:
    client_id: str
    secret: str


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN)
    return Settings(
        issuer=ISSUER,
        store_url="sqlite:///unused.db",
        hash_key_file=tmp_path / "hash-key",
        keys_dir=tmp_path / "keys",
        admin_auth=AdminAuthMode.BEARER_FILE,
        admin_token_file=token_file,
        dev_mode=True,
        throttle_client_failures=3,
        throttle_ip_failures=5,
    )


@pytest.fixture
def app(settings: Settings, memory_store: MemoryStore, clock: FakeClock) -> CredwardApp:
    assert settings.admin_token_file is not None
    return create_app(settings, memory_store, BearerFileAuthenticator(settings.admin_token_file), HASH_KEY, clock)


@pytest.fixture
def add_client(memory_store: MemoryStore) -> Callable[..., Client]:
    """Put an active account holding read:/data and write:/data/out into the store."""

    def add(
        *,
        audiences: tuple[str, ...] = ("https://storage.test",),
        ttl: int = 300,
        groups: tuple[str, ...] = ("/cms/prod", "/cms"),
        expires_at: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Client:
        client_id, secret = new_client_id(), new_client_secret()
        memory_store.accounts[client_id] = Account(
            client_id=client_id,
            identity=f"{client_id}@clients.issuer.test",
            audiences=audiences,
            token_ttl_seconds=ttl,
            groups=groups,
            expires_at=expires_at,
            secrets=(SecretRecord("s1", hash_secret(HASH_KEY, secret), not_after),),
            role_mappings=(
                RoleMapping(
                    "rb",
                    ("reader", "writer"),
                    (Permission(("read",), ("data",)), Permission(("write",), ("data", "out"))),
                ),
            ),
        )
        return Client(client_id, secret)

    return add

"""PostgreSQL backend, for several replicas of the service sharing one database.

Concurrency, by design:

* Migrations run in one transaction under a transaction-scoped advisory lock,
  so replicas starting together apply each migration exactly once.
* Every write that appends to the revocation feed first takes another advisory
  lock, held until commit. Cursors come from an identity column, so they are
  unique and increasing; the lock also makes them *commit* in cursor order, so a
  reader that has seen cursor N can never later find a smaller cursor appear
  (which would be skipped by ``since=N``). Gaps (rolled-back inserts, purged
  entries) are harmless: readers only ask for "greater than".
* Accounts and role mappings are single-statement upserts (``ON CONFLICT``).
* Every operation but ``delete_account`` is idempotent, so when the database
  drops a connection under it (failover, restart, ``pg_terminate_backend``)
  it is retried on a fresh one instead of failing a token request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import asyncpg

from credward.api.admin import RoleMapping
from credward.security.model import (
    Account,
    AccountStatus,
    RevocationEvent,
    RevocationKind,
    SecretUsage,
    SecretUse,
    StoreInfo,
)
from credward.security.store import codec
from credward.security.store.migrations import SCHEMA_VERSION_POSTGRES, pending

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors meaning "this connection is gone", not "this statement is wrong". InternalClientError is what asyncpg
# raises when the server's termination notice arrives while a statement is being sent.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)
ATTEMPTS = 3

# Advisory lock keys: arbitrary constants, namespaced by their high bits ("cw" = credward).
MIGRATION_LOCK_KEY = 0x6377_0000_0001
FEED_LOCK_KEY = 0x6377_0000_0002

_ACCOUNT_SELECT = """
SELECT a.client_id, a.identity, a.display_name, a.namespace, a.name, a.status, a.expires_at,
       a.audiences, a.token_ttl_seconds, a.groups, a.secrets, a.updated_at, m.mappings
FROM accounts AS a LEFT JOIN role_mappings AS m ON m.client_id = a.client_id
WHERE a.client_id = $1
"""


def _event(row: Any) -> RevocationEvent:
    return RevocationEvent(
        cursor=int(row["cursor"]),
        kind=RevocationKind(row["kind"]),
        subject=row["subject"],
        client_id=row["client_id"],
        revoked_at=codec.to_utc(row["revoked_at"]),
        expires_at=codec.optional_utc(row["expires_at"]),
    )


class PostgresStore:
    """The ``Store`` on a PostgreSQL database, through an asyncpg connection pool (opened on first use)."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, command_timeout: float = 30.0) -> None:
        self.dsn = dsn
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "command_timeout": command_timeout,
        }
        self._pool: Any = None  # asyncpg.Pool; asyncpg ships no type hints
        self._open_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self._get_pool()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._open_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self.dsn, **self._pool_args)
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _retrying(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run an idempotent ``op(pool)``; if its connection died, run it again on a fresh one."""
        pool = await self._get_pool()
        for attempt in range(1, ATTEMPTS):
            try:
                return await op(pool)
            except CONNECTION_LOST as exc:
                log.warning("PostgreSQL connection lost (%s); retrying on a fresh connection", type(exc).__name__)
                await asyncio.sleep(0.05 * attempt)
        return await op(pool)

    async def _query(self, method: str, query: str, *args: Any) -> Any:
        """One statement (``fetch``, ``fetchrow``, ``fetchval`` or ``execute``) on a pooled connection, retried."""
        return await self._retrying(lambda pool: getattr(pool, method)(query, *args))

    async def _transaction(self, work: Callable[[Any], Awaitable[T]], *, retry: bool = True) -> T:
        """``work(conn)`` in one transaction; retried as a whole unless ``retry`` is False (non-idempotent work)."""

        async def run(pool: Any) -> T:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)

        return await (self._retrying(run) if retry else run(await self._get_pool()))

    async def migrate(self) -> None:
        async def work(conn: Any) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(SCHEMA_VERSION_POSTGRES)
            applied = [int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_version")]
            for migration in pending(applied):
                for statement in migration.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
                )

        await self._transaction(work)

    async def schema_versions(self) -> list[int]:
        """Applied migration numbers (for tests and diagnostics)."""
        rows = await self._query("fetch", "SELECT version FROM schema_version ORDER BY version")
        return [int(r["version"]) for r in rows]

    async def ping(self) -> None:
        await self._query("fetchval", "SELECT 1 FROM schema_version LIMIT 1")

    async def info(self) -> StoreInfo:
        row = await self._query(
            "fetchrow", "SELECT id, (SELECT count(*) FROM accounts) AS accounts FROM store_info LIMIT 1"
        )
        if row is None:
            raise RuntimeError("the store has no id: it was not migrated")
        return StoreInfo(store_id=str(row["id"]), accounts=int(row["accounts"]))

    async def get_account(self, client_id: str) -> Account | None:
        if not codec.storable(client_id):
            return None
        row = await self._query("fetchrow", _ACCOUNT_SELECT, client_id)
        if row is None:
            return None
        return Account(
            client_id=row["client_id"],
            identity=row["identity"],
            display_name=row["display_name"],
            namespace=row["namespace"],
            name=row["name"],
            status=AccountStatus(row["status"]),
            expires_at=codec.optional_utc(row["expires_at"]),
            audiences=codec.strings_from_json(row["audiences"]),
            token_ttl_seconds=int(row["token_ttl_seconds"]),
            groups=codec.strings_from_json(row["groups"]),
            secrets=codec.secrets_from_json(row["secrets"]),
            role_mappings=codec.mappings_from_json(row["mappings"]),
            updated_at=codec.optional_utc(row["updated_at"]),
        )

    async def put_account(self, account: Account) -> None:
        codec.check_account(account)
        await self._query(
            "execute",
            """
            INSERT INTO accounts (client_id, identity, display_name, namespace, name, status, expires_at,
                                  audiences, token_ttl_seconds, groups, secrets, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, $11::jsonb, $12)
            ON CONFLICT (client_id) DO UPDATE SET
                identity = excluded.identity, display_name = excluded.display_name,
                namespace = excluded.namespace, name = excluded.name, status = excluded.status,
                expires_at = excluded.expires_at, audiences = excluded.audiences,
                token_ttl_seconds = excluded.token_ttl_seconds, groups = excluded.groups,
                secrets = excluded.secrets, updated_at = excluded.updated_at
            """,
            account.client_id,
            account.identity,
            account.display_name,
            account.namespace,
            account.name,
            account.status.value,
            codec.optional_utc(account.expires_at),
            codec.strings_to_json(account.audiences),
            account.token_ttl_seconds,
            codec.strings_to_json(account.groups),
            codec.secrets_to_json(account.secrets),
            codec.to_utc(account.updated_at or datetime.now(UTC)),
        )

    async def set_role_mappings(self, client_id: str, mappings: tuple[RoleMapping, ...]) -> None:
        """Replace the account's mappings; accepted before the account exists, so push order does not matter."""
        codec.check_mappings(client_id, mappings)
        await self._query(
            "execute",
            """
            INSERT INTO role_mappings (client_id, mappings, updated_at) VALUES ($1, $2::jsonb, now())
            ON CONFLICT (client_id) DO UPDATE SET mappings = excluded.mappings, updated_at = excluded.updated_at
            """,
            client_id,
            codec.mappings_to_json(mappings),
        )

    async def delete_account(self, client_id: str) -> bool:
        """Delete the account and its role mappings (feed entries stay: validators still need them)."""
        if not codec.storable(client_id):
            return False

        async def work(conn: Any) -> bool:
            deleted = await conn.fetchval("DELETE FROM accounts WHERE client_id = $1 RETURNING 1", client_id)
            await conn.execute("DELETE FROM role_mappings WHERE client_id = $1", client_id)
            await conn.execute("DELETE FROM secret_usage WHERE client_id = $1", client_id)
            return deleted is not None

        # Not retried: if the first attempt committed, a retry would find nothing and answer False.
        return await self._transaction(work, retry=False)

    @staticmethod
    async def _latest_event(conn: Any, kind: RevocationKind, subject: str) -> RevocationEvent | None:
        row = await conn.fetchrow(
            "SELECT cursor, kind, subject, client_id, revoked_at, expires_at FROM revocations"
            " WHERE kind = $1 AND subject = $2 ORDER BY cursor DESC LIMIT 1",
            kind.value,
            subject,
        )
        return None if row is None else _event(row)

    @staticmethod
    async def _append_event(
        conn: Any, kind: RevocationKind, subject: str, client_id: str, at: datetime, expires_at: datetime | None
    ) -> RevocationEvent:
        row = await conn.fetchrow(
            "INSERT INTO revocations (kind, subject, client_id, revoked_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
            " RETURNING cursor, kind, subject, client_id, revoked_at, expires_at",
            kind.value,
            subject,
            client_id,
            codec.to_utc(at),
            codec.optional_utc(expires_at),
        )
        return _event(row)

    async def revoke_account(self, client_id: str, at: datetime) -> RevocationEvent:
        """Idempotent: revoking an already revoked (or unknown) account returns its existing feed entry."""
        codec.check_storable(client_id=client_id)

        async def work(conn: Any) -> RevocationEvent:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK_KEY)
            status = await conn.fetchval("SELECT status FROM accounts WHERE client_id = $1 FOR UPDATE", client_id)
            already = status is None or status == AccountStatus.REVOKED.value
            event = await self._latest_event(conn, RevocationKind.ACCOUNT, client_id) if already else None
            if event is None:
                await conn.execute(
                    "UPDATE accounts SET status = $2, updated_at = $3 WHERE client_id = $1",
                    client_id,
                    AccountStatus.REVOKED.value,
                    codec.to_utc(at),
                )
                event = await self._append_event(conn, RevocationKind.ACCOUNT, client_id, client_id, at, None)
            return event

        return await self._transaction(work)

    async def revoke_token(self, jti: str, client_id: str, expires_at: datetime, at: datetime) -> RevocationEvent:
        """Idempotent: revoking the same token twice returns the first feed entry (RFC 7009 §2.2)."""
        codec.check_storable(jti=jti, client_id=client_id)

        async def work(conn: Any) -> RevocationEvent:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK_KEY)
            known = await conn.fetchval("SELECT 1 FROM revoked_tokens WHERE jti = $1", jti)
            event = await self._latest_event(conn, RevocationKind.TOKEN, jti) if known is not None else None
            if event is None:
                event = await self._append_event(conn, RevocationKind.TOKEN, jti, client_id, at, expires_at)
                await conn.execute(
                    """
                    INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at, cursor)
                    VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (jti) DO UPDATE SET cursor = excluded.cursor, expires_at = excluded.expires_at
                    """,
                    jti,
                    client_id,
                    codec.to_utc(expires_at),
                    codec.to_utc(at),
                    event.cursor,
                )
            return event

        return await self._transaction(work)

    async def is_token_revoked(self, jti: str) -> bool:
        if not codec.storable(jti):
            return False
        return await self._query("fetchval", "SELECT 1 FROM revoked_tokens WHERE jti = $1", jti) is not None

    async def revocations_since(self, cursor: int, limit: int = 500) -> list[RevocationEvent]:
        rows = await self._query(
            "fetch",
            "SELECT cursor, kind, subject, client_id, revoked_at, expires_at FROM revocations"
            " WHERE cursor > $1 ORDER BY cursor LIMIT $2",
            cursor,
            limit,
        )
        return [_event(r) for r in rows]

    async def latest_cursor(self) -> int:
        return int(await self._query("fetchval", "SELECT coalesce(max(cursor), 0) FROM revocations"))

    async def purge_expired(self, now: datetime) -> int:
        """Forget revoked tokens and feed entries past their expiry; readers tolerate the gaps this leaves."""
        cutoff = codec.to_utc(now)

        async def work(conn: Any) -> int:
            tokens = await conn.fetch("DELETE FROM revoked_tokens WHERE expires_at < $1 RETURNING 1", cutoff)
            events = await conn.fetch(
                "DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < $1 RETURNING 1", cutoff
            )
            return len(tokens) + len(events)

        return await self._transaction(work)

    async def record_usage(self, uses: Sequence[SecretUse]) -> None:
        """Idempotent (the latest time wins), so a batch whose connection died is simply written again."""
        rows = [
            (u.client_id, u.secret_id, caller, codec.to_utc(u.last_used_at))
            for u in uses
            if codec.storable(u.client_id) and codec.storable(u.secret_id) and codec.storable(u.caller)
            for caller in (u.caller, "")
        ]
        if not rows:
            return

        async def work(conn: Any) -> None:
            await conn.executemany(
                "INSERT INTO secret_usage (client_id, secret_id, caller, last_used_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (client_id, secret_id, caller)"
                " DO UPDATE SET last_used_at = GREATEST(secret_usage.last_used_at, excluded.last_used_at)",
                rows,
            )

        await self._transaction(work)

    async def secret_usage(self, client_id: str, callers_since: datetime) -> Mapping[str, SecretUsage]:
        if not codec.storable(client_id):
            return {}
        rows = await self._query(
            "fetch",
            "SELECT secret_id, max(last_used_at) AS last_used,"
            " count(*) FILTER (WHERE caller <> '' AND last_used_at >= $2) AS callers"
            " FROM secret_usage WHERE client_id = $1 GROUP BY secret_id",
            client_id,
            codec.to_utc(callers_since),
        )
        return {str(r["secret_id"]): SecretUsage(codec.to_utc(r["last_used"]), int(r["callers"])) for r in rows}

    async def purge_usage(self, before: datetime) -> int:
        rows = await self._query(
            "fetch",
            "DELETE FROM secret_usage WHERE caller <> '' AND last_used_at < $1 RETURNING 1",
            codec.to_utc(before),
        )
        return len(rows)

"""SQLite backend: the default, one file beside a single replica.

One writer connection, guarded by an asyncio lock, because aiosqlite runs a
connection's statements on one thread and two tasks interleaving on it would
share a transaction. Reads use a second connection: in WAL mode they see only
committed data and never wait for the writer. ``BEGIN IMMEDIATE`` takes SQLite's
write lock up front, so two processes migrating the same file serialise instead
of failing half way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import aiosqlite

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
from credward.security.store.migrations import SCHEMA_VERSION_SQLITE, pending

_BUSY_TIMEOUT_MS = 10_000


async def _enable_wal(conn: aiosqlite.Connection) -> None:
    """``journal_mode = WAL``, retried while locked: several replicas opening a new file at once race for
    the exclusive lock the switch needs, and SQLite answers that race with SQLITE_BUSY without waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.02)


_ACCOUNT_SELECT = """
SELECT a.client_id, a.identity, a.display_name, a.namespace, a.name, a.status, a.expires_at,
       a.audiences, a.token_ttl_seconds, a.groups, a.secrets, a.updated_at, m.mappings
FROM accounts AS a LEFT JOIN role_mappings AS m ON m.client_id = a.client_id
WHERE a.client_id = ?
"""


def _event(row: sqlite3.Row | tuple[object, ...]) -> RevocationEvent:
    cursor, kind, subject, client_id, revoked_at, expires_at = tuple(row)
    revoked = codec.time_from_text(str(revoked_at))
    assert revoked is not None
    return RevocationEvent(
        cursor=int(str(cursor)),
        kind=RevocationKind(str(kind)),
        subject=str(subject),
        client_id=str(client_id),
        revoked_at=revoked,
        expires_at=codec.time_from_text(None if expires_at is None else str(expires_at)),
    )


class SQLiteStore:
    """The ``Store`` on one SQLite file (created with its parent directory if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, Python's sqlite3 never opens hidden transactions.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # FULL: an acknowledged revocation must survive a power loss; writes are rare (admin path), so it is cheap.
            await conn.execute_fetchall("PRAGMA synchronous = FULL")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _open(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        """Connect on first use, so the factory can stay synchronous."""
        if self._writer is not None and self._reader is not None:
            return self._writer, self._reader
        async with self._open_lock:
            if self._writer is None or self._reader is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                writer = await self._connect()
                try:
                    await _enable_wal(writer)
                    reader = await self._connect()
                except BaseException:
                    await writer.close()
                    raise
                self._writer, self._reader = writer, reader
            return self._writer, self._reader

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        for conn in (reader, writer):
            if conn is not None:
                await conn.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection, committed on success and rolled back otherwise."""
        writer, _ = await self._open()
        async with self._write_lock:
            await writer.execute_fetchall("BEGIN IMMEDIATE")
            try:
                yield writer
                await writer.execute_fetchall("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (disk full, I/O error): never leave the writer inside a transaction.
                if writer.in_transaction:
                    await writer.execute_fetchall("ROLLBACK")
                raise

    async def migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute_fetchall(SCHEMA_VERSION_SQLITE)
            async with conn.execute("SELECT version FROM schema_version") as cur:
                applied = [int(row[0]) for row in await cur.fetchall()]
            now = codec.time_to_text(datetime.now(UTC))
            for migration in pending(applied):
                for statement in migration.sqlite:
                    await conn.execute_fetchall(statement)
                await conn.execute_fetchall(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now),
                )

    async def schema_versions(self) -> list[int]:
        """Applied migration numbers (for tests and diagnostics)."""
        _, reader = await self._open()
        async with reader.execute("SELECT version FROM schema_version ORDER BY version") as cur:
            return [int(row[0]) for row in await cur.fetchall()]

    async def ping(self) -> None:
        _, reader = await self._open()
        async with reader.execute("SELECT 1 FROM schema_version LIMIT 1") as cur:
            await cur.fetchone()

    async def info(self) -> StoreInfo:
        _, reader = await self._open()
        async with reader.execute("SELECT id, (SELECT count(*) FROM accounts) FROM store_info LIMIT 1") as cur:
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("the store has no id: it was not migrated")
        return StoreInfo(store_id=str(row[0]), accounts=int(row[1]))

    async def get_account(self, client_id: str) -> Account | None:
        if not codec.storable(client_id):
            return None
        _, reader = await self._open()
        async with reader.execute(_ACCOUNT_SELECT, (client_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        (
            cid,
            identity,
            display,
            namespace,
            name,
            status,
            expires,
            audiences,
            ttl,
            groups,
            secrets,
            updated,
            mappings,
        ) = row
        return Account(
            client_id=cid,
            identity=identity,
            display_name=display,
            namespace=namespace,
            name=name,
            status=AccountStatus(status),
            expires_at=codec.time_from_text(expires),
            audiences=codec.strings_from_json(audiences),
            token_ttl_seconds=int(ttl),
            groups=codec.strings_from_json(groups),
            secrets=codec.secrets_from_json(secrets),
            role_mappings=codec.mappings_from_json(mappings),
            updated_at=codec.time_from_text(updated),
        )

    async def put_account(self, account: Account) -> None:
        codec.check_account(account)
        updated_at = codec.time_to_text(account.updated_at or datetime.now(UTC))
        async with self._transaction() as conn:
            await conn.execute_fetchall(
                """
                INSERT INTO accounts (client_id, identity, display_name, namespace, name, status, expires_at,
                                      audiences, token_ttl_seconds, groups, secrets, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (client_id) DO UPDATE SET
                    identity = excluded.identity, display_name = excluded.display_name,
                    namespace = excluded.namespace, name = excluded.name, status = excluded.status,
                    expires_at = excluded.expires_at, audiences = excluded.audiences,
                    token_ttl_seconds = excluded.token_ttl_seconds, groups = excluded.groups,
                    secrets = excluded.secrets, updated_at = excluded.updated_at
                """,
                (
                    account.client_id,
                    account.identity,
                    account.display_name,
                    account.namespace,
                    account.name,
                    account.status.value,
                    codec.time_to_text(account.expires_at),
                    codec.strings_to_json(account.audiences),
                    account.token_ttl_seconds,
                    codec.strings_to_json(account.groups),
                    codec.secrets_to_json(account.secrets),
                    updated_at,
                ),
            )

    async def set_role_mappings(self, client_id: str, mappings: tuple[RoleMapping, ...]) -> None:
        """Replace the account's mappings; accepted before the account exists, so push order does not matter."""
        codec.check_mappings(client_id, mappings)
        async with self._transaction() as conn:
            await conn.execute_fetchall(
                """
                INSERT INTO role_mappings (client_id, mappings, updated_at) VALUES (?, ?, ?)
                ON CONFLICT (client_id) DO UPDATE SET mappings = excluded.mappings, updated_at = excluded.updated_at
                """,
                (client_id, codec.mappings_to_json(mappings), codec.time_to_text(datetime.now(UTC))),
            )

    async def delete_account(self, client_id: str) -> bool:
        """Delete the account and its role mappings (feed entries stay: validators still need them)."""
        if not codec.storable(client_id):
            return False
        async with self._transaction() as conn:
            async with conn.execute("DELETE FROM accounts WHERE client_id = ?", (client_id,)) as cur:
                existed = cur.rowcount > 0
            await conn.execute_fetchall("DELETE FROM role_mappings WHERE client_id = ?", (client_id,))
            await conn.execute_fetchall("DELETE FROM secret_usage WHERE client_id = ?", (client_id,))
        return existed

    @staticmethod
    async def _latest_event(conn: aiosqlite.Connection, kind: RevocationKind, subject: str) -> RevocationEvent | None:
        async with conn.execute(
            "SELECT cursor, kind, subject, client_id, revoked_at, expires_at FROM revocations"
            " WHERE kind = ? AND subject = ? ORDER BY cursor DESC LIMIT 1",
            (kind.value, subject),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _event(row)

    @staticmethod
    async def _append_event(
        conn: aiosqlite.Connection,
        kind: RevocationKind,
        subject: str,
        client_id: str,
        at: datetime,
        expires_at: datetime | None,
    ) -> RevocationEvent:
        async with conn.execute(
            "INSERT INTO revocations (kind, subject, client_id, revoked_at, expires_at) VALUES (?, ?, ?, ?, ?)"
            " RETURNING cursor, kind, subject, client_id, revoked_at, expires_at",
            (kind.value, subject, client_id, codec.time_to_text(at), codec.time_to_text(expires_at)),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return _event(row)

    async def revoke_account(self, client_id: str, at: datetime) -> RevocationEvent:
        """Idempotent: revoking an already revoked (or unknown) account returns its existing feed entry."""
        codec.check_storable(client_id=client_id)
        async with self._transaction() as conn:
            async with conn.execute("SELECT status FROM accounts WHERE client_id = ?", (client_id,)) as cur:
                row = await cur.fetchone()
            already = row is None or row[0] == AccountStatus.REVOKED.value
            event = await self._latest_event(conn, RevocationKind.ACCOUNT, client_id) if already else None
            if event is None:
                await conn.execute_fetchall(
                    "UPDATE accounts SET status = ?, updated_at = ? WHERE client_id = ?",
                    (AccountStatus.REVOKED.value, codec.time_to_text(at), client_id),
                )
                event = await self._append_event(conn, RevocationKind.ACCOUNT, client_id, client_id, at, None)
        return event

    async def revoke_token(self, jti: str, client_id: str, expires_at: datetime, at: datetime) -> RevocationEvent:
        """Idempotent: revoking the same token twice returns the first feed entry (RFC 7009 §2.2)."""
        codec.check_storable(jti=jti, client_id=client_id)
        async with self._transaction() as conn:
            async with conn.execute("SELECT cursor FROM revoked_tokens WHERE jti = ?", (jti,)) as cur:
                known = await cur.fetchone() is not None
            event = await self._latest_event(conn, RevocationKind.TOKEN, jti) if known else None
            if event is None:
                event = await self._append_event(conn, RevocationKind.TOKEN, jti, client_id, at, expires_at)
                await conn.execute_fetchall(
                    "INSERT OR REPLACE INTO revoked_tokens (jti, client_id, expires_at, revoked_at, cursor)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (jti, client_id, codec.time_to_text(expires_at), codec.time_to_text(at), event.cursor),
                )
        return event

    async def is_token_revoked(self, jti: str) -> bool:
        if not codec.storable(jti):
            return False
        _, reader = await self._open()
        async with reader.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)) as cur:
            return await cur.fetchone() is not None

    async def revocations_since(self, cursor: int, limit: int = 500) -> list[RevocationEvent]:
        _, reader = await self._open()
        async with reader.execute(
            "SELECT cursor, kind, subject, client_id, revoked_at, expires_at FROM revocations"
            " WHERE cursor > ? ORDER BY cursor LIMIT ?",
            (cursor, limit),
        ) as cur:
            return [_event(row) for row in await cur.fetchall()]

    async def latest_cursor(self) -> int:
        _, reader = await self._open()
        async with reader.execute("SELECT coalesce(max(cursor), 0) FROM revocations") as cur:
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def purge_expired(self, now: datetime) -> int:
        """Forget revoked tokens and feed entries past their expiry; readers tolerate the gaps this leaves."""
        cutoff = codec.time_to_text(now)
        async with self._transaction() as conn:
            async with conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (cutoff,)) as cur:
                removed = cur.rowcount
            async with conn.execute(
                "DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at < ?", (cutoff,)
            ) as cur:
                removed += cur.rowcount
        return removed

    async def record_usage(self, uses: Sequence[SecretUse]) -> None:
        rows = [
            (u.client_id, u.secret_id, caller, codec.time_to_text(u.last_used_at))
            for u in uses
            if codec.storable(u.client_id) and codec.storable(u.secret_id) and codec.storable(u.caller)
            for caller in (u.caller, "")
        ]
        if not rows:
            return
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO secret_usage (client_id, secret_id, caller, last_used_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (client_id, secret_id, caller)"
                " DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)",
                rows,
            )

    async def secret_usage(self, client_id: str, callers_since: datetime) -> Mapping[str, SecretUsage]:
        if not codec.storable(client_id):
            return {}
        _, reader = await self._open()
        async with reader.execute(
            "SELECT secret_id, max(last_used_at),"
            " sum(CASE WHEN caller <> '' AND last_used_at >= ? THEN 1 ELSE 0 END)"
            " FROM secret_usage WHERE client_id = ? GROUP BY secret_id",
            (codec.time_to_text(callers_since), client_id),
        ) as cur:
            rows = await cur.fetchall()
        found: dict[str, SecretUsage] = {}
        for secret_id, last, callers in rows:
            last_used = codec.time_from_text(str(last))
            assert last_used is not None
            found[str(secret_id)] = SecretUsage(last_used, int(callers))
        return found

    async def purge_usage(self, before: datetime) -> int:
        async with (
            self._transaction() as conn,
            conn.execute(
                "DELETE FROM secret_usage WHERE caller <> '' AND last_used_at < ?", (codec.time_to_text(before),)
            ) as cur,
        ):
            return int(cur.rowcount)

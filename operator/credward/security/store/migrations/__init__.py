"""Versioned schema migrations for both backends.

Each migration has a number and the statements for each dialect, written side by
side so the two schemas cannot drift apart unnoticed. Migrations are only ever
appended; a shipped one is never edited. Each backend records applied numbers in
a ``schema_version`` table and applies the missing ones, in order, in one
transaction under a lock, so two replicas starting at once apply each exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


SCHEMA_VERSION_SQLITE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
SCHEMA_VERSION_POSTGRES = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="accounts, role mappings, revocation feed",
        sqlite=(
            """
            CREATE TABLE accounts (
                client_id TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                display_name TEXT NOT NULL DEFAULT '',
                namespace TEXT NOT NULL DEFAULT '',
                name TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL,
                expires_at TEXT,
                audiences TEXT NOT NULL DEFAULT '[]',
                token_ttl_seconds INTEGER NOT NULL,
                groups TEXT NOT NULL DEFAULT '[]',
                secrets TEXT NOT NULL DEFAULT '[]',
                updated_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE role_mappings (
                client_id TEXT PRIMARY KEY,
                mappings TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE revocations (
                cursor INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                client_id TEXT NOT NULL,
                revoked_at TEXT NOT NULL,
                expires_at TEXT
            )
            """,
            "CREATE INDEX revocations_subject ON revocations (kind, subject)",
            """
            CREATE TABLE revoked_tokens (
                jti TEXT PRIMARY KEY,
                client_id TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                revoked_at TEXT NOT NULL,
                cursor INTEGER NOT NULL
            )
            """,
        ),
        postgres=(
            """
            CREATE TABLE accounts (
                client_id TEXT PRIMARY KEY,
                identity TEXT NOT NULL,
                display_name TEXT NOT NULL DEFAULT '',
                namespace TEXT NOT NULL DEFAULT '',
                name TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL,
                expires_at TIMESTAMPTZ,
                audiences JSONB NOT NULL DEFAULT '[]',
                token_ttl_seconds INTEGER NOT NULL,
                groups JSONB NOT NULL DEFAULT '[]',
                secrets JSONB NOT NULL DEFAULT '[]',
                updated_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE role_mappings (
                client_id TEXT PRIMARY KEY,
                mappings JSONB NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE revocations (
                cursor BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                client_id TEXT NOT NULL,
                revoked_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ
            )
            """,
            "CREATE INDEX revocations_subject ON revocations (kind, subject)",
            """
            CREATE TABLE revoked_tokens (
                jti TEXT PRIMARY KEY,
                client_id TEXT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                revoked_at TIMESTAMPTZ NOT NULL,
                cursor BIGINT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=2,
        name="store id",
        # One row: a random id made when the store is created, so a client of the service (the operator)
        # can tell that the store it pushed to was wiped or replaced. Not a secret; randomblob and
        # gen_random_uuid come from each database's CSPRNG.
        sqlite=(
            "CREATE TABLE store_info (id TEXT NOT NULL, created_at TEXT NOT NULL)",
            "INSERT INTO store_info (id, created_at)"
            " VALUES (lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        ),
        postgres=(
            "CREATE TABLE store_info (id TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            "INSERT INTO store_info (id) VALUES (replace(gen_random_uuid()::text, '-', ''))",
        ),
    ),
    Migration(
        version=3,
        name="secret usage",
        # Per (account, secret, caller) the latest use; caller '' is the secret's own row (its last use by
        # anyone), which outlives the per-caller rows that purge_usage drops once they are old.
        sqlite=(
            """
            CREATE TABLE secret_usage (
                client_id TEXT NOT NULL,
                secret_id TEXT NOT NULL,
                caller TEXT NOT NULL,
                last_used_at TEXT NOT NULL,
                PRIMARY KEY (client_id, secret_id, caller)
            )
            """,
            "CREATE INDEX secret_usage_last_used ON secret_usage (last_used_at)",
        ),
        postgres=(
            """
            CREATE TABLE secret_usage (
                client_id TEXT NOT NULL,
                secret_id TEXT NOT NULL,
                caller TEXT NOT NULL,
                last_used_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (client_id, secret_id, caller)
            )
            """,
            "CREATE INDEX secret_usage_last_used ON secret_usage (last_used_at)",
        ),
    ),
)


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Refuse a migration list that is not numbered 1, 2, 3, ... (a merge mistake, caught at startup)."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.name!r} has number {migration.version}, expected {expected}")
        if not migration.sqlite or not migration.postgres:
            raise ValueError(f"migration {migration.version} lacks statements for a dialect")


def pending(applied: Iterable[int], migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations not yet applied, oldest first.

    A database that has a version this code does not know was migrated by a newer
    release; running older code against it could corrupt data, so that is refused.
    """
    check_sequence(migrations)
    done = set(applied)
    newest = len(migrations)
    unknown = sorted(v for v in done if v > newest or v < 1)
    if unknown:
        raise RuntimeError(f"database schema has versions {unknown} unknown to this release (newest known: {newest})")
    return [m for m in migrations if m.version not in done]

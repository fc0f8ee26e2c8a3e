"""The ``Store`` contract, run against both real backends (a SQLite file and a real PostgreSQL).

Every test gets a fresh, migrated database through the ``store`` fixture, once
per backend; tests that need a second connection (another replica, a restart)
open one on the same ``store_url``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from credward.api.admin import RoleMapping, SecretHash
from credward.api.models import Permission
from credward.errors import UnstorableText
from credward.security.model import Account, AccountStatus, RevocationKind, SecretUsage, SecretUse
from credward.security.store import Store, open_store
from credward.security.store.migrations import MIGRATIONS
from credward.security.store.postgres import PostgresStore
from credward.security.store.sqlite import SQLiteStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
ALL_VERSIONS = [m.version for m in MIGRATIONS]


def account(client_id: str = "c-1", **changes: object) -> Account:
    base = Account(
        client_id=client_id,
        identity=f"{client_id}@clients.issuer.test",
        display_name="Nightly backup",
        namespace="team-a",
        name="backup",
        status=AccountStatus.ACTIVE,
        expires_at=NOW + timedelta(days=30),
        audiences=("https://storage.test", "https://queue.test"),
        token_ttl_seconds=600,
        groups=("/team-a/backup", "/team-a"),
        secrets=(
            SecretHash(id="a1b2c3d4", hash="0" * 64, created_at=NOW, not_after=NOW + timedelta(hours=24)),
            SecretHash(id="e5f6a7b8", hash="f" * 64, not_after=None),
        ),
        updated_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


MAPPINGS = (
    RoleMapping(
        name="backup-writer",
        roles=("writer", "backup"),
        permissions=(
            Permission(verbs=("read", "write"), path=("data", "team-a", "*")),
            Permission(verbs=("read",), path=("logs",)),
        ),
    ),
    RoleMapping(name="empty"),
)


async def schema_versions(store: Store) -> list[int]:
    assert isinstance(store, SQLiteStore | PostgresStore)
    return await store.schema_versions()


async def test_round_trip_account_with_secrets_and_role_mappings(store: Store) -> None:
    await store.put_account(account())
    await store.set_role_mappings("c-1", MAPPINGS)
    assert await store.get_account("c-1") == account(role_mappings=MAPPINGS)


async def test_unknown_account_is_none(store: Store) -> None:
    assert await store.get_account("nobody") is None


async def test_times_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    cet = timezone(timedelta(hours=1))
    await store.put_account(account(expires_at=datetime(2027, 1, 1, 13, 0, tzinfo=cet)))
    got = await store.get_account("c-1")
    assert got is not None
    assert got.expires_at is not None
    assert got.expires_at == datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    assert got.expires_at.utcoffset() == timedelta(0)


async def test_put_account_stamps_updated_at_when_missing(store: Store) -> None:
    before = datetime.now(UTC)
    await store.put_account(account(updated_at=None))
    got = await store.get_account("c-1")
    assert got is not None
    assert got.updated_at is not None
    assert before - timedelta(seconds=1) <= got.updated_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_put_account_replaces_everything_but_role_mappings(store: Store) -> None:
    await store.put_account(account())
    await store.set_role_mappings("c-1", MAPPINGS)
    rotated = account(
        display_name="Renamed",
        audiences=("https://other.test",),
        groups=(),
        secrets=(SecretHash(id="99999999", hash="1" * 64),),
        status=AccountStatus.DISABLED,
        expires_at=None,
        token_ttl_seconds=60,
    )
    await store.put_account(rotated)
    assert await store.get_account("c-1") == replace(rotated, role_mappings=MAPPINGS)


async def test_set_role_mappings_replaces_the_whole_set(store: Store) -> None:
    await store.put_account(account())
    await store.set_role_mappings("c-1", MAPPINGS)
    only = (RoleMapping(name="reader", roles=("reader",), permissions=(Permission(verbs=("read",), path=("data",)),)),)
    await store.set_role_mappings("c-1", only)
    got = await store.get_account("c-1")
    assert got is not None
    assert got.role_mappings == only
    await store.set_role_mappings("c-1", ())
    got = await store.get_account("c-1")
    assert got is not None
    assert got.role_mappings == ()


async def test_role_mappings_pushed_before_the_account_apply_once_it_exists(store: Store) -> None:
    await store.set_role_mappings("c-1", MAPPINGS)
    assert await store.get_account("c-1") is None
    await store.put_account(account())
    got = await store.get_account("c-1")
    assert got is not None
    assert got.role_mappings == MAPPINGS


async def test_delete_account_removes_it_and_its_role_mappings(store: Store) -> None:
    await store.put_account(account())
    await store.put_account(account("c-2"))
    await store.set_role_mappings("c-1", MAPPINGS)
    assert await store.delete_account("c-1") is True
    assert await store.get_account("c-1") is None
    assert await store.delete_account("c-1") is False
    assert await store.get_account("c-2") == account("c-2")
    await store.put_account(account())
    got = await store.get_account("c-1")
    assert got is not None
    assert got.role_mappings == ()


async def test_revoke_account_marks_it_and_appends_one_feed_entry(store: Store) -> None:
    await store.put_account(account())
    event = await store.revoke_account("c-1", NOW)
    assert (event.kind, event.subject, event.client_id, event.revoked_at) == (
        RevocationKind.ACCOUNT,
        "c-1",
        "c-1",
        NOW,
    )
    got = await store.get_account("c-1")
    assert got is not None
    assert got.status is AccountStatus.REVOKED
    again = await store.revoke_account("c-1", NOW + timedelta(minutes=1))
    assert again == event
    assert await store.revocations_since(0) == [event]


async def test_revoking_again_after_reactivation_appends_a_new_entry(store: Store) -> None:
    await store.put_account(account())
    first = await store.revoke_account("c-1", NOW)
    await store.put_account(account(status=AccountStatus.ACTIVE))
    second = await store.revoke_account("c-1", NOW + timedelta(hours=1))
    assert second.cursor > first.cursor
    assert await store.revocations_since(0) == [first, second]


async def test_revoking_an_unknown_account_still_reaches_the_feed(store: Store) -> None:
    event = await store.revoke_account("ghost", NOW)
    assert await store.get_account("ghost") is None
    assert await store.revocations_since(0) == [event]
    assert await store.revoke_account("ghost", NOW) == event


async def test_revoke_token(store: Store) -> None:
    expires = NOW + timedelta(minutes=5)
    assert await store.is_token_revoked("jti-1") is False
    event = await store.revoke_token("jti-1", "c-1", expires, NOW)
    assert (event.kind, event.subject, event.client_id, event.revoked_at, event.expires_at) == (
        RevocationKind.TOKEN,
        "jti-1",
        "c-1",
        NOW,
        expires,
    )
    assert await store.is_token_revoked("jti-1") is True
    assert await store.is_token_revoked("jti-2") is False
    assert await store.revoke_token("jti-1", "c-1", expires, NOW + timedelta(seconds=5)) == event
    assert await store.revocations_since(0) == [event]


async def test_feed_is_ordered_and_resumes_after_a_cursor(store: Store) -> None:
    await store.put_account(account())
    events = [
        await store.revoke_token("jti-a", "c-1", NOW + timedelta(minutes=5), NOW),
        await store.revoke_account("c-1", NOW),
        await store.revoke_token("jti-b", "c-1", NOW + timedelta(minutes=5), NOW),
        await store.revoke_token("jti-c", "c-2", NOW + timedelta(minutes=5), NOW),
    ]
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    assert await store.revocations_since(0) == events
    assert await store.revocations_since(events[1].cursor) == events[2:]
    assert await store.revocations_since(events[-1].cursor) == []
    assert await store.revocations_since(0, limit=2) == events[:2]
    assert await store.revocations_since(-1) == events


async def test_concurrent_writers_get_distinct_increasing_cursors(store: Store, store_url: str) -> None:
    """Three stores on one database stand for three replicas; readers following the feed must miss nothing.

    A reader that has seen cursor N asks for "> N"; if a smaller cursor could
    still commit afterwards, that reader would skip it for ever.
    """
    replicas = [store, open_store(store_url), open_store(store_url)]
    writes_count = 150
    done = asyncio.Event()

    async def follow(reader: Store) -> list[int]:
        seen: list[int] = []
        cursor = 0
        while True:
            finished = done.is_set()
            batch = await reader.revocations_since(cursor)
            seen.extend(e.cursor for e in batch)
            if batch:
                cursor = batch[-1].cursor
            elif finished:
                return seen
            await asyncio.sleep(0)

    try:
        readers = [asyncio.create_task(follow(r)) for r in replicas]
        writes = [
            replicas[i % len(replicas)].revoke_token(f"jti-{i}", "c-1", NOW + timedelta(minutes=5), NOW)
            for i in range(writes_count)
        ]
        events = await asyncio.gather(*writes)
        done.set()
        followed = await asyncio.wait_for(asyncio.gather(*readers), 60)
    finally:
        for r in replicas[1:]:
            await r.close()
    cursors = [e.cursor for e in events]
    assert len(set(cursors)) == len(cursors)
    feed = await store.revocations_since(0)
    assert [e.cursor for e in feed] == sorted(cursors)
    assert {e.subject for e in feed} == {f"jti-{i}" for i in range(writes_count)}
    for seen in followed:
        assert seen == sorted(cursors), "a reader following the feed skipped or repeated an entry"


async def test_migrate_twice_is_a_no_op(store: Store) -> None:
    await store.put_account(account())
    await store.migrate()
    await store.migrate()
    assert await schema_versions(store) == ALL_VERSIONS
    assert await store.get_account("c-1") == account()


async def test_replicas_migrating_at_once_apply_each_migration_once(store_url: str) -> None:
    replicas = [open_store(store_url) for _ in range(4)]
    try:
        await asyncio.gather(*(r.migrate() for r in replicas))
        for r in replicas:
            assert await schema_versions(r) == ALL_VERSIONS
            await r.ping()
    finally:
        for r in replicas:
            await r.close()


async def test_data_survives_reopening(store: Store, store_url: str) -> None:
    await store.put_account(account())
    await store.set_role_mappings("c-1", MAPPINGS)
    event = await store.revoke_token("jti-1", "c-1", NOW + timedelta(minutes=5), NOW)
    await store.close()
    reopened = open_store(store_url)
    try:
        await reopened.migrate()
        assert await reopened.get_account("c-1") == account(role_mappings=MAPPINGS)
        assert await reopened.is_token_revoked("jti-1") is True
        assert await reopened.revocations_since(0) == [event]
        later = await reopened.revoke_token("jti-2", "c-1", NOW + timedelta(minutes=5), NOW)
        assert later.cursor > event.cursor
    finally:
        await reopened.close()


async def test_purge_forgets_expired_revocations_and_leaves_a_tolerable_gap(store: Store) -> None:
    assert isinstance(store, SQLiteStore | PostgresStore)
    old = await store.revoke_token("old", "c-1", NOW - timedelta(minutes=1), NOW - timedelta(minutes=6))
    account_event = await store.revoke_account("c-1", NOW)
    fresh = await store.revoke_token("fresh", "c-1", NOW + timedelta(minutes=5), NOW)
    assert await store.purge_expired(NOW) == 2  # the old token's row and its feed entry
    assert await store.is_token_revoked("old") is False
    assert await store.is_token_revoked("fresh") is True
    assert await store.revocations_since(0) == [account_event, fresh]
    newer = await store.revoke_token("newer", "c-1", NOW + timedelta(minutes=5), NOW)
    assert newer.cursor > fresh.cursor > old.cursor


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_info_names_the_store_and_counts_its_accounts(store: Store, store_url: str) -> None:
    first = await store.info()
    assert first.accounts == 0
    assert len(first.store_id) == 32
    await store.put_account(account())
    await store.put_account(account("c-2"))
    await store.delete_account("c-2")
    assert await store.info() == replace(first, accounts=1)
    await store.migrate()
    again = open_store(store_url)  # another replica, or a restart: the same store, the same id
    try:
        await again.migrate()
        assert (await again.info()).store_id == first.store_id
    finally:
        await again.close()


async def test_latest_cursor_follows_the_feed(store: Store) -> None:
    assert await store.latest_cursor() == 0
    first = await store.revoke_token("jti-1", "c-1", NOW + timedelta(minutes=5), NOW)
    second = await store.revoke_account("c-1", NOW)
    assert await store.latest_cursor() == second.cursor > first.cursor


async def test_nul_characters_are_refused_on_write_and_never_found(store: Store) -> None:
    """PostgreSQL text cannot hold NUL; both backends refuse it alike, and lookups by such keys find nothing."""
    for bad in (account("c\x00"), account(display_name="a\x00b"), account(groups=("/g\x00",))):
        with pytest.raises(UnstorableText):
            await store.put_account(bad)
    with pytest.raises(UnstorableText, match="role_mappings"):
        await store.set_role_mappings("c-1", (RoleMapping.model_construct(name="r", roles=("x\x00",)),))
    with pytest.raises(UnstorableText, match="jti"):
        await store.revoke_token("j\x00", "c-1", NOW, NOW)
    with pytest.raises(UnstorableText, match="client_id"):
        await store.revoke_account("c\x00", NOW)
    assert await store.get_account("c\x00") is None
    assert await store.is_token_revoked("j\x00") is False
    assert await store.delete_account("c\x00") is False
    assert await store.revocations_since(0) == []


async def test_a_failed_write_leaves_no_trace_and_the_store_usable(store: Store) -> None:
    with pytest.raises((OverflowError, asyncpg.exceptions.DataError)):
        await store.put_account(account(token_ttl_seconds=2**70))
    assert await store.get_account("c-1") is None
    await store.put_account(account())
    assert await store.get_account("c-1") == account()
    event = await store.revoke_account("c-1", NOW)
    assert await store.revocations_since(0) == [event]


async def test_usage_batches_merge_per_secret_and_caller_the_latest_time_winning(store: Store) -> None:
    await store.put_account(account())
    t = NOW
    await store.record_usage(
        [
            SecretUse("c-1", "a1b2c3d4", "10.0.0.1", t),
            SecretUse("c-1", "a1b2c3d4", "10.0.0.2", t + timedelta(seconds=5)),
            SecretUse("c-1", "e5f6a7b8", "10.0.0.1", t + timedelta(seconds=1)),
        ]
    )
    # A second replica's batch, one of its times older than what is stored: the latest stays.
    await store.record_usage(
        [
            SecretUse("c-1", "a1b2c3d4", "10.0.0.2", t + timedelta(seconds=2)),
            SecretUse("c-1", "a1b2c3d4", "10.0.0.3", t + timedelta(seconds=3)),
        ]
    )
    usage = await store.secret_usage("c-1", t - timedelta(minutes=1))
    assert usage == {
        "a1b2c3d4": SecretUsage(t + timedelta(seconds=5), 3),
        "e5f6a7b8": SecretUsage(t + timedelta(seconds=1), 1),
    }
    # Only callers seen since the given time count; the secret's last use does not depend on it.
    recent = await store.secret_usage("c-1", t + timedelta(seconds=3))
    assert recent["a1b2c3d4"] == SecretUsage(t + timedelta(seconds=5), 2)
    assert await store.secret_usage("nobody", t) == {}


async def test_purged_usage_keeps_each_secrets_last_use_and_deleting_the_account_forgets_it(store: Store) -> None:
    await store.put_account(account())
    await store.record_usage([SecretUse("c-1", "a1b2c3d4", "10.0.0.1", NOW)])
    assert await store.purge_usage(NOW + timedelta(hours=1)) == 1  # the caller row; the secret's own row stays
    assert await store.secret_usage("c-1", NOW - timedelta(hours=1)) == {"a1b2c3d4": SecretUsage(NOW, 0)}
    assert await store.delete_account("c-1")
    assert await store.secret_usage("c-1", NOW - timedelta(hours=1)) == {}

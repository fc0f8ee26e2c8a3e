"""Pure helpers of the storage layer: URL parsing, time text, JSON of secrets and mappings, migration order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from credward.api.admin import RoleMapping, SecretHash
from credward.api.models import Permission
from credward.security.store import codec
from credward.security.store.migrations import MIGRATIONS, Migration, check_sequence, pending

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "backend", "target"),
    [
        ("sqlite:///data/credward.db", "sqlite", "data/credward.db"),
        ("sqlite:////var/lib/credward/store.db", "sqlite", "/var/lib/credward/store.db"),
        ("SQLITE:///x.db", "sqlite", "x.db"),
        ("postgresql://u:p@db:5432/credward", "postgres", "postgresql://u:p@db:5432/credward"),
        ("postgres://db/credward?sslmode=require", "postgres", "postgres://db/credward?sslmode=require"),
    ],
)
def test_parse_store_url(url: str, backend: str, target: str) -> None:
    parsed = codec.parse_store_url(url)
    assert parsed.backend == backend
    assert parsed.target == (str(Path(target)) if backend == "sqlite" else target)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///", "expected sqlite:///"),
        ("sqlite://host/x.db", "expected sqlite:///"),
        ("sqlite:///:memory:", "must be a file"),
        ("mysql://db/x", "unknown scheme 'mysql'"),
        ("credward.db", "unknown scheme ''"),
    ],
)
def test_parse_store_url_rejects_what_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        codec.parse_store_url(url)


def test_time_text_is_fixed_width_utc_so_strings_sort_like_times() -> None:
    times = [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # 23:00 UTC the day before
        datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(999, 6, 1, tzinfo=UTC),  # glibc strftime would write "999", breaking the fixed width
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    texts = [codec.time_to_text(t) for t in times]
    assert len({len(t or "") for t in texts}) == 1
    assert sorted(texts, key=str) == [codec.time_to_text(t) for t in sorted(times)]
    for t, text in zip(times, texts, strict=True):
        assert codec.time_from_text(text) == t


def test_naive_times_are_taken_as_utc_never_local() -> None:
    assert codec.to_utc(datetime(2026, 5, 1, 12, 0)) == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert codec.time_to_text(None) is None
    assert codec.time_from_text(None) is None
    assert codec.optional_utc(None) is None


def test_secrets_round_trip_in_order() -> None:
    secrets = (
        SecretHash(id="b", hash="ab" * 32, not_after=datetime(2026, 1, 2, tzinfo=UTC)),
        SecretHash(id="a", hash="cd" * 32, created_at=datetime(2025, 12, 1, 8, tzinfo=UTC)),
    )
    assert codec.secrets_from_json(codec.secrets_to_json(secrets)) == secrets
    assert codec.secrets_from_json(codec.secrets_to_json(())) == ()


def test_role_mappings_round_trip_and_none_means_none() -> None:
    mappings = (
        RoleMapping(
            name="rb", roles=("r1", "r2"), permissions=(Permission(verbs=("read", "write"), path=("a", "c", "*")),)
        ),
        RoleMapping(name="bare"),
    )
    assert codec.mappings_from_json(codec.mappings_to_json(mappings)) == mappings
    assert mappings[0].permissions[0].path == ("a", "c")  # stored in the canonical form of the path rule
    assert codec.mappings_from_json(None) == ()
    assert codec.strings_from_json(codec.strings_to_json(("x", "y"))) == ("x", "y")


def test_shipped_migrations_are_numbered_from_one_with_both_dialects() -> None:
    check_sequence(MIGRATIONS)
    assert pending([]) == list(MIGRATIONS)
    assert pending([m.version for m in MIGRATIONS]) == []


def test_pending_keeps_order_and_skips_applied() -> None:
    ms = [Migration(i, f"m{i}", ("s",), ("p",)) for i in (1, 2, 3)]
    assert [m.version for m in pending([2], ms)] == [1, 3]


def test_a_database_newer_than_the_code_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"versions \[99\] unknown"):
        pending([1, 99])


@pytest.mark.parametrize(
    "migrations",
    [
        [Migration(2, "starts at two", ("s",), ("p",))],
        [Migration(1, "a", ("s",), ("p",)), Migration(3, "gap", ("s",), ("p",))],
        [Migration(1, "no postgres", ("s",), ())],
    ],
)
def test_a_broken_migration_list_is_refused(migrations: list[Migration]) -> None:
    with pytest.raises(ValueError, match="migration"):
        check_sequence(migrations)


def test_nul_is_not_storable_and_the_error_names_the_field() -> None:
    assert codec.storable("client-1")
    assert not codec.storable("client\x00")
    assert not codec.storable("lone \ud800 surrogate")
    assert codec.storable("ünïcødé ✓ 😀")
    codec.check_storable(a="x", b=("y", "z"))
    with pytest.raises(codec.UnstorableText, match="groups"):
        codec.check_storable(name="ok", groups=("/a", "/b\x00"))


def test_open_store_picks_the_backend_from_the_url_without_connecting(tmp_path: Path) -> None:
    from credward.security.store import open_store
    from credward.security.store.postgres import PostgresStore
    from credward.security.store.sqlite import SQLiteStore

    lite = open_store(f"sqlite:///{tmp_path}/never-created.db")
    assert isinstance(lite, SQLiteStore)
    assert lite.path == tmp_path / "never-created.db"
    assert not lite.path.exists()
    assert isinstance(open_store("postgresql://nobody@127.0.0.1:1/none"), PostgresStore)
    with pytest.raises(ValueError, match="unknown scheme"):
        open_store("redis://localhost")

"""Property test: any account the model can express comes back unchanged from both real backends.

Arbitrary Unicode (but NUL and lone surrogates, which no backend can store and
both refuse alike), times in any UTC offset down to the microsecond and across
the whole calendar, empty and long lists: the JSON columns and the time text
must round-trip all of it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credward.api.admin import HASH_PATTERN, ROLE_PATTERN, SECRET_ID_PATTERN, RoleMapping, SecretHash
from credward.api.models import Permission
from credward.domain.paths import PART_RE
from credward.errors import UnstorableText
from credward.security.model import Account, AccountStatus
from credward.security.store import Store

pytestmark = pytest.mark.integration

text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=24)
texts = st.lists(text, max_size=4).map(tuple)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.one_of(st.just(UTC), offsets)
)
# Secrets and role mappings are the admin API's validated models: generate what they admit.
secrets = st.builds(
    SecretHash,
    id=st.from_regex(SECRET_ID_PATTERN, fullmatch=True),
    hash=st.from_regex(HASH_PATTERN, fullmatch=True),
    created_at=st.none() | times,
    not_after=st.none() | times,
)
parts = st.from_regex(PART_RE, fullmatch=True).filter(lambda p: p not in (".", ".."))
permissions = st.builds(
    Permission,
    verbs=st.sampled_from([("read",), ("write",), ("read", "write"), ("write", "read")]),
    path=st.lists(parts, min_size=1, max_size=4).map(tuple),
)
mappings = st.lists(
    st.builds(
        RoleMapping,
        name=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
        roles=st.lists(st.from_regex(ROLE_PATTERN, fullmatch=True), max_size=3, unique=True).map(tuple),
        permissions=st.lists(permissions, max_size=3).map(tuple),
    ),
    max_size=3,
).map(tuple)
accounts = st.builds(
    Account,
    client_id=text.filter(bool),
    identity=text,
    display_name=text,
    namespace=text,
    name=text,
    status=st.sampled_from(AccountStatus),
    expires_at=st.none() | times,
    audiences=texts,
    token_ttl_seconds=st.integers(1, 2**31 - 1),
    groups=texts,
    secrets=st.lists(secrets, max_size=3).map(tuple),
    updated_at=times,
)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(account=accounts, role_mappings=mappings)
async def test_any_account_round_trips(store: Store, account: Account, role_mappings: tuple[RoleMapping, ...]) -> None:
    await store.put_account(account)
    await store.set_role_mappings(account.client_id, role_mappings)
    assert await store.get_account(account.client_id) == replace(account, role_mappings=role_mappings)


@PROPERTY_SETTINGS
@given(
    good=text,
    bad=st.sampled_from(["\x00", "\ud800", "\udfff", "a\x00b"]),
    field=st.sampled_from(["client_id", "display_name", "identity", "audiences", "groups"]),
)
async def test_unstorable_text_is_refused_alike(store: Store, good: str, bad: str, field: str) -> None:
    value = good + bad
    options: dict[str, dict[str, Any]] = {
        "client_id": {"client_id": value},
        "display_name": {"display_name": value},
        "identity": {"identity": value},
        "audiences": {"audiences": (good, value)},
        "groups": {"groups": (value,)},
    }
    changes = options[field]
    with pytest.raises(UnstorableText, match=field.split("_")[0]):
        await store.put_account(replace(Account(client_id="c", identity="c@clients.test"), **changes))
    assert await store.get_account(value) is None

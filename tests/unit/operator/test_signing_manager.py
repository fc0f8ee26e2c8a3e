"""The shared-Secret bootstrap and the signing-key manager over an in-memory Secrets API (unit tier: no server).

The fake keeps ``resourceVersion`` as the API server does, so a write decided on a stale read gets a 409.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from credward.domain.credential import Event
from credward.domain.jwk import SigningAlgorithm
from credward.domain.signing_keys import ANNOTATION_MANAGED, KeyPolicy
from credward.errors import KubeUnavailable, SettingsError
from credward.operator.shared_secrets import NamespaceSecrets, ensure_signing_keys, hash_key_from_secret
from credward.operator.signing import SigningKeyManager

pytestmark = pytest.mark.unit

NS = "credward"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = KeyPolicy(
    period=timedelta(seconds=14),
    jwks_cache=timedelta(seconds=2),
    propagation=timedelta(seconds=6),
    clock_skew=timedelta(seconds=1),
)


class FakeSecrets:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self._version = 0
        self.after_next_read: Callable[[], Awaitable[None]] | None = None  # runs once, between a read and its answer

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        self.writes += 1
        obj = copy.deepcopy(body)
        obj["metadata"].update(resourceVersion=str(self._version), uid="uid-1")
        return obj

    async def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        obj = copy.deepcopy(self.objects[name])
        hook, self.after_next_read = self.after_next_read, None
        if hook is not None:
            await hook()
        return obj

    async def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> Any:
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[name] = self._stamp(body)
        return copy.deepcopy(self.objects[name])

    async def replace_namespaced_secret(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        if body["metadata"].get("resourceVersion") != self.objects[name]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.objects[name] = self._stamp(body)
        return copy.deepcopy(self.objects[name])

    def annotations(self, name: str) -> dict[str, str]:
        return dict(self.objects[name]["metadata"].get("annotations") or {})


def store(fake: FakeSecrets) -> NamespaceSecrets:
    return NamespaceSecrets(fake, NS, lambda obj: obj)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def manager(fake: FakeSecrets, clock: Clock, events: list[Event], ttl: int | None = 5) -> SigningKeyManager:
    async def post(involved: dict[str, Any], event: Event) -> None:
        events.append(event)

    return SigningKeyManager(
        store(fake),
        "keys",
        POLICY,
        SigningAlgorithm.ES256,
        max_token_ttl=lambda: timedelta(seconds=ttl) if ttl is not None else None,
        post_event=post,
        clock=clock,
    )


async def test_hash_key_is_created_once_then_read() -> None:
    fake = FakeSecrets()
    created = await hash_key_from_secret(store(fake), "hash")
    assert len(created) == 64
    assert await hash_key_from_secret(store(fake), "hash") == created
    assert fake.writes == 1


async def test_a_malformed_hash_key_is_refused_without_its_value() -> None:
    fake = FakeSecrets()
    value = base64.b64encode(b"tiny-value").decode()
    fake.objects["hash"] = {"metadata": {"name": "hash"}, "data": {"hash-key": value}}
    with pytest.raises(SettingsError, match=r"Secret credward/hash .*at least 32 bytes") as err:
        await hash_key_from_secret(store(fake), "hash")
    assert "tiny-value" not in str(err.value)


async def test_signing_keys_are_created_managed_and_a_second_start_writes_nothing() -> None:
    fake = FakeSecrets()
    first = await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    assert fake.annotations("keys")[ANNOTATION_MANAGED] == "true"
    again = await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    assert again.current.kid == first.current.kid
    assert fake.writes == 1


async def test_the_manager_publishes_promotes_and_retires_on_schedule() -> None:
    fake, clock, events = FakeSecrets(), Clock(), list[Event]()
    initial = await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    keys = manager(fake, clock, events)
    # The Secret was created at the real time; the fake clock starts from what it recorded.
    clock.now = datetime.fromisoformat(fake.annotations("keys")["credward.io/current-key-promoted-at"])
    start = clock.now
    assert await keys.step_once() == pytest.approx(6.01)
    clock.now = start + timedelta(seconds=6)
    assert await keys.step_once() == 0.0
    published = fake.annotations("keys")["credward.io/next-key-id"]
    clock.now = start + timedelta(seconds=14)
    await keys.step_once()
    assert fake.annotations("keys")["credward.io/current-key-id"] == published
    assert fake.annotations("keys")["credward.io/previous-key-id"] == initial.current.kid
    clock.now = start + timedelta(seconds=20)
    await keys.step_once()  # the next one is published
    clock.now = start + timedelta(seconds=26)
    await keys.step_once()
    assert "credward.io/previous-key-id" not in fake.annotations("keys")
    assert set(fake.objects["keys"]["data"]) == {"current.pem", "next.pem"}
    assert [e.reason for e in events] == [
        "SigningKeyPublished",
        "SigningKeyPromoted",
        "SigningKeyPublished",
        "SigningKeyRetired",
    ]
    assert not any("PRIVATE KEY" in e.message for e in events)


async def test_a_write_that_lost_a_race_is_decided_again_from_the_winner() -> None:
    fake, clock, events = FakeSecrets(), Clock(), list[Event]()
    await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    clock.now = datetime.fromisoformat(fake.annotations("keys")["credward.io/current-key-promoted-at"])
    clock.now += timedelta(seconds=6)
    a, b = manager(fake, clock, events), manager(fake, clock, events)

    async def other_replica_publishes() -> None:
        await b.step_once()

    fake.after_next_read = other_replica_publishes
    with pytest.raises(KubeUnavailable, match="409"):
        await a.step_once()
    winner = fake.annotations("keys")["credward.io/next-key-id"]
    assert await a.step_once() > 0  # nothing left to do: the winner's next key stands
    assert fake.annotations("keys")["credward.io/next-key-id"] == winner
    assert len(events) == 1


async def test_a_supplied_secret_is_never_written() -> None:
    fake, clock, events = FakeSecrets(), Clock(), list[Event]()
    await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    fake.objects["keys"]["metadata"]["annotations"] = {}  # as if someone else had created it
    clock.now = T0 + timedelta(days=365)
    writes = fake.writes
    await manager(fake, clock, events).step_once()
    assert fake.writes == writes
    assert events == []


async def test_without_a_max_token_ttl_the_previous_key_stays() -> None:
    fake, clock, events = FakeSecrets(), Clock(), list[Event]()
    await ensure_signing_keys(store(fake), "keys", SigningAlgorithm.ES256)
    clock.now = datetime.fromisoformat(fake.annotations("keys")["credward.io/current-key-promoted-at"])
    keys = manager(fake, clock, events, ttl=None)
    for seconds in (6, 14, 200):
        clock.now += timedelta(seconds=seconds)
        await keys.step_once()
    assert "credward.io/previous-key-id" in fake.annotations("keys")

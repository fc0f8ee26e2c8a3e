"""The verified-token cache: entries die at their deadline, memory stays bounded, revocations remove entries."""

from __future__ import annotations

import pytest

from credward.client.cache import VerifiedCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_entries_die_at_their_deadline() -> None:
    clock = Clock()
    cache: VerifiedCache[str] = VerifiedCache(10, clock)
    assert cache.put("t", "claims", deadline=1010.0)
    assert cache.get("t") == "claims"
    clock.now = 1009.999
    assert cache.get("t") == "claims"
    clock.now = 1010.0
    assert cache.get("t") is None


def test_a_dead_or_past_deadline_is_not_stored() -> None:
    cache: VerifiedCache[str] = VerifiedCache(10, Clock())
    assert not cache.put("t", "v", deadline=1000.0)
    assert cache.get("t") is None
    assert len(cache) == 0


def test_bounded_oldest_goes_first() -> None:
    cache: VerifiedCache[int] = VerifiedCache(3, Clock())
    for n in range(5):
        cache.put(f"t{n}", n, deadline=2000.0)
    assert len(cache) == 3
    assert [cache.get(f"t{n}") for n in range(5)] == [None, None, 2, 3, 4]


def test_inserts_sweep_dead_entries_from_the_front() -> None:
    clock = Clock()
    cache: VerifiedCache[int] = VerifiedCache(100, clock)
    for n in range(4):
        cache.put(f"old{n}", n, deadline=1001.0)
    clock.now = 1002.0
    cache.put("new", 9, deadline=1100.0)
    assert len(cache) == 1
    assert cache.get("new") == 9


def test_disabled_cache_stores_nothing() -> None:
    cache: VerifiedCache[int] = VerifiedCache(0, Clock())
    assert not cache.put("t", 1, deadline=5000.0)
    assert cache.get("t") is None


def test_admit_is_asked_last() -> None:
    cache: VerifiedCache[int] = VerifiedCache(10, Clock())
    assert not cache.put("t", 1, deadline=5000.0, admit=lambda: False)
    assert cache.get("t") is None
    assert cache.put("t", 1, deadline=5000.0, admit=lambda: True)


def test_discard_if_removes_matching_entries() -> None:
    cache: VerifiedCache[str] = VerifiedCache(10, Clock())
    for key in ("a1", "a2", "b1"):
        cache.put(key, key[0], deadline=5000.0)
    assert cache.discard_if(lambda v: v == "a") == 2
    assert cache.get("b1") == "b"
    assert cache.get("a1") is None


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedCache(-1)

"""Failed-authentication throttle with a moved clock."""

from __future__ import annotations

import pytest

from credward.domain.throttle import FailureThrottle

pytestmark = pytest.mark.unit


def test_locks_after_limit_and_releases_after_window() -> None:
    t = FailureThrottle(limit=2, window=10)
    assert t.retry_after("k", 0) is None
    t.record_failure("k", 0)
    assert t.retry_after("k", 1) is None
    t.record_failure("k", 1)
    assert t.retry_after("k", 2) == 8
    assert t.retry_after("other", 2) is None
    assert t.retry_after("k", 10) is None
    t.record_failure("k", 10)
    assert t.retry_after("k", 10) is None


def test_memory_is_bounded() -> None:
    t = FailureThrottle(limit=1, window=10, max_keys=3)
    for i in range(10):
        t.record_failure(str(i), 0)
    assert t.retry_after("0", 1) is None
    assert t.retry_after("9", 1) == 9


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="limit"):
        FailureThrottle(limit=0, window=1)

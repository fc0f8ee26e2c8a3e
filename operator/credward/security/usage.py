"""Which secret each token request authenticated with: recorded in memory, flushed to the store in batches.

The operator retires a rotated-out secret only once nobody uses it, so the service remembers, per
secret id, when it was last used and by which callers (source addresses). The token endpoint's part
is one dict update (:meth:`UsageTracker.record`); a background task moves what was recorded to the
store every ``usage_flush_interval`` seconds, one transaction per batch, never a store write per
token request. Memory is bounded: at most ``max_secrets`` secrets and ``max_callers`` callers per
secret between two flushes; callers beyond that are counted together as one (:data:`OVERFLOW`), so
``distinctCallers`` reads "at least this many" once it reaches the bound.

Several replicas (PostgreSQL) each flush what they saw; the store merges them (the latest time per
secret and caller wins), so distinct callers are counted across replicas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from credward.security.metrics import Metrics
from credward.security.model import SecretUsage, SecretUse
from credward.security.store.base import Store

log = logging.getLogger(__name__)

# Every caller past a secret's bound is recorded under this one name (not an address, so never confused with one).
OVERFLOW = "*"
MAX_SECRETS = 100_000
MAX_CALLERS = 64


@dataclass(frozen=True, slots=True)
class Pending:
    """What this replica saw of one secret since its last flush."""

    last_used: float
    callers: frozenset[str]


class UsageTracker:
    """Per-secret last use and callers, held in memory until :meth:`flush` writes them in one batch."""

    def __init__(
        self, store: Store, metrics: Metrics, *, max_secrets: int = MAX_SECRETS, max_callers: int = MAX_CALLERS
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_secrets = max_secrets
        self._max_callers = max_callers
        # (client id, secret id) -> caller -> last use (epoch seconds)
        self._seen: dict[tuple[str, str], dict[str, float]] = {}

    def record(self, client_id: str, secret_id: str, caller: str, now: float) -> None:
        """The hot path: remember that ``caller`` used this secret at ``now`` (no I/O, no await)."""
        key = (client_id, secret_id)
        callers = self._seen.get(key)
        if callers is None:
            if len(self._seen) >= self._max_secrets:
                self._metrics.usage_dropped.inc()
                return
            self._seen[key] = callers = {}
        if caller not in callers and len(callers) >= self._max_callers:
            caller = OVERFLOW
        callers[caller] = now

    def pending(self, client_id: str, secret_id: str) -> Pending | None:
        """What was seen of this secret and not flushed yet (so this replica's admin view is current)."""
        callers = self._seen.get((client_id, secret_id))
        if not callers:
            return None
        return Pending(max(callers.values()), frozenset(callers))

    def forget(self, client_id: str) -> None:
        """A deleted account: drop what was seen of it (it would be flushed for an account that is gone)."""
        for key in [k for k in self._seen if k[0] == client_id]:
            del self._seen[key]

    async def flush(self) -> int:
        """Write what was seen since the last flush in one batch; returns how many (secret, caller) rows.

        If the store fails, the batch is merged back (within the bounds) and written by the next flush.
        """
        batch, self._seen = self._seen, {}
        uses = [
            SecretUse(client_id, secret_id, caller, datetime.fromtimestamp(at, UTC))
            for (client_id, secret_id), callers in batch.items()
            for caller, at in callers.items()
        ]
        if not uses:
            return 0
        try:
            await self._store.record_usage(uses)
        except Exception:
            self._metrics.usage_flush_failures.inc()
            for (client_id, secret_id), callers in batch.items():
                for caller, at in callers.items():
                    self.record(client_id, secret_id, caller, max(at, self._latest(client_id, secret_id, caller)))
            raise
        self._metrics.usage_flushed.inc(len(uses))
        return len(uses)

    def _latest(self, client_id: str, secret_id: str, caller: str) -> float:
        return self._seen.get((client_id, secret_id), {}).get(caller, 0.0)


def merge(stored: SecretUsage | None, pending: Pending | None, callers_since: float) -> SecretUsage | None:
    """The store's view of a secret with this replica's unflushed part on top (a pure merge for the admin view).

    The stored count and the pending callers may overlap; the larger of the two (plus nothing) is a
    lower bound that never double-counts one caller, and it is exact with one replica between flushes.
    """
    if pending is None or pending.last_used < callers_since:
        return stored
    last = datetime.fromtimestamp(pending.last_used, UTC)
    if stored is None:
        return SecretUsage(last, len(pending.callers))
    return SecretUsage(max(stored.last_used_at, last), max(stored.distinct_callers, len(pending.callers)))

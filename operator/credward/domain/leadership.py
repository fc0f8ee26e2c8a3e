"""Timing rules of the operator's leader election (a coordination.k8s.io/v1 Lease), free of any clock or client.

The rules are client-go's (``k8s.io/client-go/tools/leaderelection``):

- a candidate may take the Lease when it has seen no change to it for ``lease_duration``
  (measured on its own clock from when it *observed* the last renewal, so clock skew between
  nodes does not matter);
- the leader renews every ``retry_period`` and gives up leading when no renewal has succeeded
  for ``renew_deadline`` (counted from the *start* of the last successful attempt, which is no
  later than the write the others observed);
- ``lease_duration - renew_deadline`` is therefore the margin by which a leader that cannot
  renew stops before anyone else may start.

credward's defaults are client-go's 15s/10s/2s scaled to 10s/7s/2s: a standby takes over within
about ``lease_duration + 2 x retry_period`` (the kill, one observation, one attempt), the leader
still survives an API-server hiccup of several seconds, the 3s margin covers a process that
exits on losing, and the Lease is written once every 2s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from credward.errors import InvalidSpec

# Waits between a standby's attempts are spread by up to this fraction, so several standbys
# started together do not ask at the same instant (client-go spreads by 1.2x; a few replicas need less).
ACQUIRE_JITTER = 0.2


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: timedelta = timedelta(seconds=10)
    renew_deadline: timedelta = timedelta(seconds=7)
    retry_period: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        for name, value in (
            ("lease duration", self.lease_duration),
            ("renew deadline", self.renew_deadline),
            ("retry period", self.retry_period),
        ):
            # The Lease stores leaseDurationSeconds as an integer; whole seconds keep the three comparable.
            if value < timedelta(seconds=1) or value.total_seconds() != int(value.total_seconds()):
                raise InvalidSpec(f"leader election {name} must be whole seconds, at least 1s (got {value})")
        if self.lease_duration <= self.renew_deadline:
            raise InvalidSpec(
                "leader election lease duration must be longer than the renew deadline, "
                "or a leader that cannot renew would still be acting when a standby takes over"
            )
        if self.renew_deadline <= self.retry_period * (1 + ACQUIRE_JITTER):
            raise InvalidSpec("leader election renew deadline must leave room for more than one retry period")

    @property
    def takeover_within(self) -> timedelta:
        """Worst case from a leader's death until a standby leads (not counting API-server latency)."""
        return self.lease_duration + 2 * self.retry_period * (1 + ACQUIRE_JITTER)

    def acquire_wait(self, spread: float) -> float:
        """Seconds a standby waits before its next attempt; ``spread`` is a random number in [0, 1)."""
        return self.retry_period.total_seconds() * (1 + ACQUIRE_JITTER * min(max(spread, 0.0), 1.0))

    def renew_budget(self, last_renewed: float, now: float) -> float:
        """Seconds left for renewing before the leader must stop; zero or less means it has lost the Lease.

        ``last_renewed`` is when the last successful attempt *started*, on the same monotonic clock as ``now``.
        """
        return self.renew_deadline.total_seconds() - (now - last_renewed)

    def lost(self, last_renewed: float, now: float) -> bool:
        return self.renew_budget(last_renewed, now) <= 0

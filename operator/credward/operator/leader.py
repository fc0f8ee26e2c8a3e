"""Leader election over a coordination.k8s.io/v1 Lease: with several replicas, one acts and the others wait.

The Lease protocol (read the record, create it or take it over when it has not changed for the
lease duration, renew it with optimistic concurrency) is kubernetes_asyncio's
:class:`~kubernetes_asyncio.leaderelection.leaderelection.LeaderElection`; credward only drives its
single acquire-or-renew step, because the library's own loops neither bound an attempt that hangs
(a partitioned leader would go on acting) nor survive a connection error. The timing rules are
:class:`credward.domain.leadership.LeaseTiming`.

A leader that cannot renew within the renew deadline exits the process at once, as
controller-runtime does: Kubernetes restarts the container, which comes back as a standby. A
leader that stops normally gives the Lease up, so a standby takes over at its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from credward.operator.settings import LeaderElectionSettings

log = logging.getLogger(__name__)


def exit_process() -> None:
    """Stop acting now: no handler, no cleanup, nothing more written (the Lease may already be someone else's)."""
    log.critical("lost the leader Lease: exiting so that this replica restarts as a standby")
    logging.shutdown()
    os._exit(1)


async def _nothing() -> None:
    """The library wants a coroutine to run while leading; credward's work is gated by :meth:`acquire` instead."""


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderElectionSettings,
        *,
        on_lost: Callable[[], None] = exit_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.timing = settings.timing
        self._leases = client.CoordinationV1Api(api)
        lock = LeaseLock(settings.lease, settings.namespace, settings.identity, api)
        self._election = LeaderElection(
            Config(
                lock,
                int(self.timing.lease_duration.total_seconds()),
                int(self.timing.renew_deadline.total_seconds()),
                int(self.timing.retry_period.total_seconds()),
                onstarted_leading=_nothing,
                onstopped_leading=_nothing,
            )
        )
        self._on_lost = on_lost
        self._clock = clock
        self._renewed = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    @staticmethod
    @asynccontextmanager
    async def connect(settings: LeaderElectionSettings) -> AsyncIterator[LeaderElector]:
        """An elector with its own API client (loaded as the operator's); gives the Lease up on exit."""
        async with client.ApiClient() as api:
            elector = LeaderElector(api, settings)
            try:
                yield elector
            finally:
                await elector.stop()

    @property
    def where(self) -> str:
        return f"Lease {self.settings.namespace}/{self.settings.lease}"

    async def _attempt(self, within: float) -> bool:
        """One acquire-or-renew step, given up after ``within`` seconds; any failure is a "no"."""
        try:
            async with asyncio.timeout(within):
                return bool(await self._election.try_acquire_or_renew())
        except TimeoutError:
            log.warning("%s: no answer from the API server within %.1fs", self.where, within)
        except ApiException as exc:
            log.warning("%s: HTTP %s %s", self.where, exc.status, exc.reason)
        except Exception as exc:  # connection errors and the like: the next attempt may succeed
            log.warning("%s: %s", self.where, type(exc).__name__)
        return False

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease, then keep renewing it in the background."""
        log.info("%s: waiting to lead as %s", self.where, self.settings.identity)
        retry = self.timing.retry_period.total_seconds()
        while True:
            started = self._clock()
            if await self._attempt(retry):
                break
            await asyncio.sleep(self.timing.acquire_wait(random.random()))  # noqa: S311 (spreading, not secrecy)
        self._renewed = started
        self.leading = True
        log.info("%s: leading as %s", self.where, self.settings.identity)
        self._task = asyncio.create_task(self._renew_forever(), name="credward-leader-renew")

    async def _renew_forever(self) -> None:
        retry = self.timing.retry_period.total_seconds()
        while True:
            await asyncio.sleep(retry)
            started = self._clock()
            budget = self.timing.renew_budget(self._renewed, started)
            if budget > 0 and await self._attempt(budget):
                self._renewed = started
            elif self.timing.lost(self._renewed, self._clock()):
                self.leading = False
                self._on_lost()
                return

    async def stop(self) -> None:
        """Stop renewing and give the Lease up if this replica still holds it (a standby then takes over at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.leading:
            return
        self.leading = False
        try:
            async with asyncio.timeout(self.timing.retry_period.total_seconds()):
                lease = await self._leases.read_namespaced_lease(self.settings.lease, self.settings.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.settings.identity:
                    return
                # As client-go's ReleaseOnCancel: no holder, and a duration that lets the next candidate in.
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                await self._leases.replace_namespaced_lease(self.settings.lease, self.settings.namespace, lease)
                log.info("%s: released", self.where)
        except Exception as exc:  # a standby then waits for the lease duration instead
            log.warning("%s: could not release (%s)", self.where, type(exc).__name__)

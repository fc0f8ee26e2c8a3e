"""Signing-key rotation: read the keys Secret, take one step of :mod:`credward.domain.signing_keys`, write it back.

Every step is one replace of the Secret with the ``resourceVersion`` it was
decided on, data and state annotations together: a crash before the write
leaves nothing done, a crash after it leaves the step recorded, and a second
operator (two leaders for a moment) loses the race with a 409 and decides
again from what the winner wrote. So a restart neither skips nor repeats a
step, and leader election only saves work.

Only a Secret annotated ``credward.io/signing-keys-managed=true`` (set on the
ones the operator creates) is rotated; a supplied one is left as it is. Logs
and Events name keys by ``kid`` (public: the JWKS shows it), never their material.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from credward.domain.credential import Event
from credward.domain.jwk import SigningAlgorithm, generate_key, key_to_pem, kid_of
from credward.domain.signing_keys import (
    ANNOTATION_MANAGED,
    KeyDecision,
    KeyPolicy,
    KeysState,
    Step,
    apply,
    decide,
    format_time,
    read_keys,
)
from credward.errors import CredwardError, KeyLoadError, SettingsError, TransientError
from credward.operator.shared_secrets import NamespaceSecrets, decode_data, ensure_signing_keys

log = logging.getLogger(__name__)

_REASONS = {
    Step.ADOPT: "SigningKeysAdopted",
    Step.RETIRE: "SigningKeyRetired",
    Step.PROMOTE: "SigningKeyPromoted",
    Step.PUBLISH: "SigningKeyPublished",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _always_leader() -> bool:
    return True


class SigningKeyManager:
    """The periodic manager of one signing-keys Secret; :meth:`run_forever` is started by the operator's startup.

    ``is_leader`` is asked before every step: with leader election on, pass the elector's check, so
    only the leader rotates (the others keep looking, cheaply, and take over from what is stored).
    """

    def __init__(
        self,
        store: NamespaceSecrets,
        name: str,
        policy: KeyPolicy,
        alg: SigningAlgorithm,
        *,
        max_token_ttl: Callable[[], timedelta | None],
        post_event: Callable[[dict[str, Any], Event], Awaitable[None]] | None = None,
        is_leader: Callable[[], bool] = _always_leader,
        resync: timedelta = timedelta(minutes=10),
        recheck: timedelta = timedelta(seconds=10),
        backoff_max: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._name = name
        self._policy = policy
        self._alg = alg
        self._max_token_ttl = max_token_ttl
        self._post_event = post_event
        self._is_leader = is_leader
        self._resync = resync.total_seconds()
        self._recheck = recheck.total_seconds()
        self._backoff_max = backoff_max.total_seconds()
        self._clock = clock
        self._said: str | None = None  # the last waiting reason logged (each is logged once)

    @property
    def where(self) -> str:
        return self._store.describe(self._name)

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                delay = await self.step_once()
                failures = 0
            except TransientError as exc:
                failures += 1
                delay = min(max(exc.delay, 2.0**failures), self._backoff_max)
                log.warning("signing keys in %s: %s; retrying in %.0fs", self.where, exc, delay)
            except CredwardError as exc:
                failures += 1
                delay = min(2.0**failures, self._backoff_max)
                log.error("signing keys in %s: %s; retrying in %.0fs", self.where, exc, delay)
            except Exception:  # a bug must not end the rotation: log it and go on with backoff
                failures += 1
                delay = min(2.0**failures, self._backoff_max)
                log.exception("signing keys in %s: unexpected error; retrying in %.0fs", self.where, delay)
            await asyncio.sleep(delay)

    async def step_once(self) -> float:
        """Take the step that is due, if any; the seconds until the next look."""
        if not self._is_leader():
            return self._recheck
        obj = await self._store.get(self._name)
        if obj is None:
            log.warning("%s is gone: creating it again with a new signing key", self.where)
            try:
                await ensure_signing_keys(self._store, self._name, self._alg)
            except SettingsError as exc:
                log.error("%s", exc)
                return self._recheck
            return 0.0
        annotations = obj["metadata"].get("annotations") or {}
        if annotations.get(ANNOTATION_MANAGED) != "true":
            self._say(f"{self.where} is not annotated {ANNOTATION_MANAGED}=true: its keys are not rotated")
            return self._resync
        try:
            state = read_keys(decode_data(obj), annotations, self._alg)
        except KeyLoadError as exc:
            self._say(f"{self.where} cannot be rotated until it is repaired: {exc}", logging.ERROR)
            return self._recheck
        now = self._clock()
        ttl = self._max_token_ttl()
        decision = decide(state, now, self._policy, ttl)
        if decision.step is None:
            self._say(f"signing keys in {self.where}: {state.describe()}; {decision.reason}", logging.DEBUG)
            return self._sleep_until(decision, now)
        new_key: tuple[bytes, str] | None = None
        if decision.step is Step.PUBLISH:
            key = generate_key(self._alg)
            new_key = (key_to_pem(key), kid_of(key))
        after = apply(state, decision.step, now, new_key=new_key, max_token_ttl=ttl)
        await self._store.replace(obj, after.data(), after.annotations())
        message = self._message(decision, state, after)
        log.info("%s: %s", self.where, message)
        if self._post_event is not None:
            involved = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"namespace": self._store.namespace, "name": self._name, "uid": obj["metadata"]["uid"]},
            }
            await self._post_event(involved, Event("Normal", _REASONS[decision.step], message))
        return 0.0  # another step may be due at once (a retirement, then the promotion it waited for)

    def _sleep_until(self, decision: KeyDecision, now: datetime) -> float:
        if decision.wake_at is None:
            return self._recheck  # waiting for something other than time (the service's max token TTL)
        seconds = (decision.wake_at - now).total_seconds() + 0.01  # never wake a hair early
        return min(max(seconds, 0.0), self._resync)

    def _message(self, decision: KeyDecision, before: KeysState, after: KeysState) -> str:
        step = decision.step
        if step is Step.PUBLISH and after.next is not None:
            signs = (after.next.since or self._clock()) + self._policy.promote_after
            return f"published next key {after.next.kid}; it signs from {format_time(signs)} at the earliest"
        if step is Step.PROMOTE and after.previous is not None:
            return (
                f"key {after.current.kid} signs now; {after.previous.kid} stays published as previous "
                f"until its tokens have expired"
            )
        if step is Step.RETIRE and before.previous is not None:
            return f"retired previous key {before.previous.kid}: every token it signed has expired"
        return f"recorded the keys no annotation named ({after.describe()}); each waits its full time from now"

    def _say(self, message: str, level: int = logging.INFO) -> None:
        if message != self._said:
            self._said = message
            log.log(level, "%s", message)

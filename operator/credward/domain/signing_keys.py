"""The signing keys' lifecycle: one pure step at a time over what the signing-keys Secret stores.

The Secret has the security service's keys-directory layout: ``current.pem``
signs, ``next.pem`` and ``previous.pem`` are only published in the JWKS.
Annotations on the Secret name the key in each slot (its ``kid``, the RFC 7638
thumbprint the JWKS shows) and since when it is there, so an operator restart
reaches the same step from what is stored, never skipping or repeating one.

With ``L`` the propagation lag (a Secret update until every service replica
has reloaded it: the kubelet's sync and cache delay plus the service's key
reload interval), ``C`` the longest a validator caches the JWKS, ``S`` the
clock skew validators allow on ``exp``, ``T`` the service's maximum token
lifetime and ``P`` the period each key signs, :func:`decide` picks the first
step that is due:

1. **adopt**: a key no annotation names (the Secret was edited by hand, or a
   supplied one opted in) is recorded as arriving now, the conservative reading;
2. **retire**: ``previous`` has not signed for ``L + T + S``: the last token it
   signed (up to ``L`` after its demotion was written) has expired even by a
   validator whose clock is ``S`` behind, so it leaves the JWKS;
3. **promote**: ``next`` has been published for ``C + L`` (every replica
   published it within ``L``, every validator's cache is younger than that
   within ``C`` more): it becomes ``current`` and the old current becomes
   ``previous``. Never while ``previous`` is still needed: the promotion
   waits for its retirement instead of dropping a key whose tokens still live;
4. **publish**: no ``next`` and the current key has signed for ``P - (C + L)``:
   a new key is published as ``next``, so it is promoted ``P`` after the last promotion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from credward.api import GROUP
from credward.domain.durations import format_duration
from credward.domain.jwk import SigningAlgorithm, algorithm_of, kid_of, load_private_key
from credward.errors import KeyLoadError

# "true" on a signing-keys Secret: the operator rotates its keys. It sets it on the Secrets it creates;
# a Secret supplied by someone else is used as it is unless its owner adds this annotation.
ANNOTATION_MANAGED = f"{GROUP}/signing-keys-managed"
ANNOTATION_PREVIOUS_MAX_TTL = f"{GROUP}/previous-key-max-token-ttl"


class Slot(StrEnum):
    CURRENT = "current"
    NEXT = "next"
    PREVIOUS = "previous"

    @property
    def file(self) -> str:
        return f"{self.value}.pem"

    @property
    def kid_annotation(self) -> str:
        return f"{GROUP}/{self.value}-key-id"

    @property
    def since_annotation(self) -> str:
        """When the key entered this slot: promoted (current), published (next), demoted (previous)."""
        return f"{GROUP}/{self.value}-key-{_SINCE_WORD[self]}-at"


_SINCE_WORD = {Slot.CURRENT: "promoted", Slot.NEXT: "published", Slot.PREVIOUS: "demoted"}
STATE_ANNOTATIONS = (
    *(a for s in Slot for a in (s.kid_annotation, s.since_annotation)),
    ANNOTATION_PREVIOUS_MAX_TTL,
)


class Step(StrEnum):
    ADOPT = "adopt"
    RETIRE = "retire"
    PROMOTE = "promote"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class StoredKey:
    pem: bytes = field(repr=False)
    kid: str
    since: datetime | None  # None: no annotation names this key yet


@dataclass(frozen=True, slots=True)
class KeysState:
    """The three slots as stored; ``previous_max_ttl`` is the service's max token TTL when previous stopped signing."""

    current: StoredKey
    next: StoredKey | None = None
    previous: StoredKey | None = None
    previous_max_ttl: timedelta | None = None

    def slot(self, slot: Slot) -> StoredKey | None:
        return {Slot.CURRENT: self.current, Slot.NEXT: self.next, Slot.PREVIOUS: self.previous}[slot]

    def data(self) -> dict[str, bytes]:
        """The Secret's data: one PEM file per filled slot."""
        return {s.file: k.pem for s in Slot if (k := self.slot(s)) is not None}

    def annotations(self) -> dict[str, str]:
        """The state annotations (every other annotation of the Secret is left as it is)."""
        out: dict[str, str] = {}
        for s in Slot:
            key = self.slot(s)
            if key is not None:
                out[s.kid_annotation] = key.kid
                if key.since is not None:
                    out[s.since_annotation] = format_time(key.since)
        if self.previous is not None and self.previous_max_ttl is not None:
            out[ANNOTATION_PREVIOUS_MAX_TTL] = str(int(self.previous_max_ttl.total_seconds()))
        return out

    def describe(self) -> str:
        """Slots and kids, for logs and events (kids are public: the JWKS shows them)."""
        return ", ".join(f"{s.value} {k.kid}" for s in Slot if (k := self.slot(s)) is not None)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    period: timedelta  # how long each key signs
    jwks_cache: timedelta  # the longest a validator keeps a fetched JWKS
    propagation: timedelta  # a Secret update until every service replica has reloaded its keys
    clock_skew: timedelta  # how far past exp a validator still accepts a token (leeway and clock differences)

    @property
    def promote_after(self) -> timedelta:
        return self.jwks_cache + self.propagation

    def keep_previous(self, max_token_ttl: timedelta) -> timedelta:
        return self.propagation + max_token_ttl + self.clock_skew


@dataclass(frozen=True, slots=True)
class KeyDecision:
    step: Step | None
    reason: str  # why the step is due, or what the schedule waits for (for logs; never key material)
    wake_at: datetime | None  # when a step falls due (None: none is scheduled until something changes)


def format_time(value: datetime) -> str:
    """RFC 3339 with microseconds: whole seconds would round a publication down and promote early."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def read_keys(data: Mapping[str, bytes], annotations: Mapping[str, str], alg: SigningAlgorithm) -> KeysState:
    """The stored state; :class:`KeyLoadError` names the file when a key is missing, unreadable or of another kind.

    An annotation that names another key than the slot holds, or a malformed time, reads as unknown (adopted).
    """
    keys: dict[Slot, StoredKey] = {}
    for slot in Slot:
        pem = data.get(slot.file)
        if pem is None:
            continue
        key = load_private_key(pem, slot.file)
        if slot is Slot.CURRENT and algorithm_of(key) is not alg:
            raise KeyLoadError(f"{slot.file} is a {algorithm_of(key).value} key but {alg.value} is configured")
        kid = kid_of(key)
        named = annotations.get(slot.kid_annotation) == kid
        keys[slot] = StoredKey(pem, kid, _parse_time(annotations.get(slot.since_annotation)) if named else None)
    current = keys.get(Slot.CURRENT)
    if current is None:
        raise KeyLoadError(f"no {Slot.CURRENT.file}: the security service has no key to sign with")
    ttl: timedelta | None = None
    previous = keys.get(Slot.PREVIOUS)
    if previous is not None and previous.since is not None:
        text = annotations.get(ANNOTATION_PREVIOUS_MAX_TTL, "")
        ttl = timedelta(seconds=int(text)) if text.isdigit() else None
    return KeysState(current, keys.get(Slot.NEXT), previous, ttl)


def initial(pem: bytes, kid: str, now: datetime) -> KeysState:
    """A new Secret's state: one key, signing from now (nothing signed before it, so nothing waits)."""
    return KeysState(StoredKey(pem, kid, now))


def retire_at(state: KeysState, policy: KeyPolicy, max_token_ttl: timedelta | None) -> datetime | None:
    """When ``previous`` may leave; None if there is none, or no max token TTL is known to count with."""
    previous = state.previous
    if previous is None or previous.since is None:
        return None
    known = [t for t in (state.previous_max_ttl, max_token_ttl) if t is not None]
    if not known:
        return None
    return previous.since + policy.keep_previous(max(known))


def decide(state: KeysState, now: datetime, policy: KeyPolicy, max_token_ttl: timedelta | None) -> KeyDecision:
    """The first step due now (see the module docstring), or the earliest time one falls due."""
    unknown = [s.value for s in Slot if (k := state.slot(s)) is not None and k.since is None]
    if unknown:
        return KeyDecision(Step.ADOPT, f"recording {', '.join(unknown)} as of now (no annotation names it)", now)
    waits: list[tuple[datetime, str]] = []
    if state.previous is not None:
        leave = retire_at(state, policy, max_token_ttl)
        if leave is None:
            waits.append((now, "waiting for the security service's max token TTL before retiring previous"))
        elif now >= leave:
            return KeyDecision(
                Step.RETIRE, f"previous {state.previous.kid} has not signed for its tokens' lifetime", now
            )
        else:
            waits.append((leave, f"previous {state.previous.kid} leaves at {format_time(leave)}"))
    if state.next is not None:
        assert state.next.since is not None
        promote = state.next.since + policy.promote_after
        if now >= promote and state.previous is None:
            return KeyDecision(
                Step.PROMOTE,
                f"next {state.next.kid} has been published for {format_duration(policy.promote_after)}",
                now,
            )
        if now < promote:
            waits.append((promote, f"next {state.next.kid} signs from {format_time(promote)}"))
    else:
        assert state.current.since is not None
        publish = state.current.since + policy.period - policy.promote_after
        if now >= publish:
            return KeyDecision(Step.PUBLISH, f"current {state.current.kid} is due to be replaced", now)
        waits.append((publish, f"a new next key is published at {format_time(publish)}"))
    scheduled = [w for w in waits if w[0] > now]
    if not scheduled:  # only an unknown TTL holds things up: nothing is scheduled by time
        return KeyDecision(None, "; ".join(reason for _, reason in waits), None)
    wake, _ = min(scheduled)
    return KeyDecision(None, "; ".join(reason for _, reason in waits), wake)


def apply(
    state: KeysState,
    step: Step,
    now: datetime,
    *,
    new_key: tuple[bytes, str] | None = None,
    max_token_ttl: timedelta | None = None,
) -> KeysState:
    """The state after ``step`` at ``now``. ``new_key`` (PEM, kid) is required to publish."""
    if step is Step.ADOPT:
        return KeysState(
            _adopted(state.current, now),
            _adopted(state.next, now) if state.next else None,
            _adopted(state.previous, now) if state.previous else None,
            state.previous_max_ttl if state.previous and state.previous.since else max_token_ttl,
        )
    if step is Step.RETIRE:
        return replace(state, previous=None, previous_max_ttl=None)
    if step is Step.PROMOTE:
        if state.next is None or state.previous is not None:
            raise ValueError("promote needs a next key and a free previous slot")
        return KeysState(replace(state.next, since=now), None, replace(state.current, since=now), max_token_ttl)
    if new_key is None or state.next is not None:
        raise ValueError("publish needs a new key and a free next slot")
    pem, kid = new_key
    return replace(state, next=StoredKey(pem, kid, now))


def _adopted(key: StoredKey, now: datetime) -> StoredKey:
    return key if key.since is not None else replace(key, since=now)

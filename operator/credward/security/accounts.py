"""The token endpoint's view of accounts: precomputed once per account, cached for a bounded time.

The hot path must not hit the store per request, so each account is turned
once into a :class:`ClientEntry` (secret hashes with numeric deadlines, held
scopes, roles) and kept for ``ttl`` seconds. Writes through this replica's
admin API invalidate the entry at once; writes through another replica (with
PostgreSQL) are seen after at most ``ttl`` seconds, so a revoked account or a
removed secret keeps working for at most that long (default 2 s). Unknown
client ids are cached too (negatively), so guessing ids does not load the store.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from credward.domain.claims import ClaimsTemplate
from credward.domain.scopes import Scope, ScopeProfile, render_permissions
from credward.security.model import Account, AccountStatus
from credward.security.store.base import Store

_MAX_ENTRIES = 100_000


class Miss(Enum):
    """What :meth:`AccountCache.peek` answers when the account must be loaded from the store first."""

    MISS = 0


MISS = Miss.MISS


@dataclass(frozen=True, slots=True)
class ClientEntry:
    account: Account
    secret_hashes: tuple[tuple[str, float | None, str], ...]  # (hash, not_after as epoch seconds, secret id)
    expires_at: float | None
    held_scopes: tuple[Scope, ...]
    roles: tuple[str, ...]
    # (scope param, requested audiences) -> serialized static claims; lives as long as the entry
    templates: dict[tuple[str | None, tuple[str, ...], str], tuple[ClaimsTemplate, str]] = field(
        default_factory=dict, compare=False
    )

    @classmethod
    def from_account(cls, account: Account, profile: ScopeProfile) -> ClientEntry:
        permissions = [(p.verbs, p.path) for m in account.role_mappings for p in m.permissions]
        roles = tuple(dict.fromkeys(r for m in account.role_mappings for r in m.roles))
        return cls(
            account=account,
            secret_hashes=tuple(
                (s.hash, s.not_after.timestamp() if s.not_after else None, s.id) for s in account.secrets
            ),
            expires_at=account.expires_at.timestamp() if account.expires_at else None,
            held_scopes=render_permissions(profile, permissions),
            roles=roles,
        )

    def usable(self, now: float) -> bool:
        """Active and within its lifetime."""
        return self.account.status is AccountStatus.ACTIVE and (self.expires_at is None or now < self.expires_at)

    def matching_secret(self, presented_hash: str, now: float) -> str | None:
        """The id of the live secret that matches, or None (constant-time compare against every one, for flat timing).

        The id is what usage tracking records: which secret each token request authenticated with.
        """
        found: str | None = None
        for stored, not_after, secret_id in self.secret_hashes:
            if hmac.compare_digest(stored, presented_hash) and (not_after is None or now < not_after):
                found = secret_id
        return found

    def secret_matches(self, presented_hash: str, now: float) -> bool:
        return self.matching_secret(presented_hash, now) is not None


class AccountCache:
    """Read-through cache of :class:`ClientEntry` by client id, with a TTL and explicit invalidation."""

    def __init__(self, store: Store, profile: ScopeProfile, ttl: float, clock: Callable[[], float]) -> None:
        self._store = store
        self._profile = profile
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, ClientEntry | None]] = {}

    def peek(self, client_id: str, now: float) -> ClientEntry | Miss | None:
        """The cached entry (None: known not to exist) without awaiting, or :data:`MISS`."""
        cached = self._entries.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        return MISS

    async def get(self, client_id: str) -> ClientEntry | None:
        now = self._clock()
        cached = self._entries.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        account = await self._store.get_account(client_id)
        entry = ClientEntry.from_account(account, self._profile) if account is not None else None
        if self._ttl > 0:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[client_id] = (now + self._ttl, entry)
        return entry

    def invalidate(self, client_id: str) -> None:
        self._entries.pop(client_id, None)

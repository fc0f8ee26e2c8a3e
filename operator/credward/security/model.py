"""What the security service stores about an account. Frozen values, no I/O.

Secrets are never stored, only their keyed hashes (see ``credward.domain.secrets``). A secret and a role
mapping are the admin API's own wire models (:class:`~credward.api.admin.SecretHash`,
:class:`~credward.api.admin.RoleMapping` with :class:`~credward.api.models.Permission`): one definition,
validated once on the way in, stored and shown as it was pushed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from credward.api.admin import RoleMapping, SecretHash


class AccountStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # e.g. expired by lifetime; can be re-enabled by the operator
    REVOKED = "revoked"  # blocked: no token is issued and live tokens appear in the revocation feed


@dataclass(frozen=True, slots=True)
class Account:
    """A service account as the operator pushed it."""

    client_id: str
    identity: str  # JWT ``sub``: ``<client_id>@clients.<issuer host>``
    display_name: str = ""
    namespace: str = ""
    name: str = ""
    status: AccountStatus = AccountStatus.ACTIVE
    expires_at: datetime | None = None
    audiences: tuple[str, ...] = ()
    token_ttl_seconds: int = 300
    groups: tuple[str, ...] = ()
    secrets: tuple[SecretHash, ...] = ()
    role_mappings: tuple[RoleMapping, ...] = field(default=())
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What a store says about itself: its id (new with every fresh store) and how many accounts it holds."""

    store_id: str
    accounts: int


class RevocationKind(StrEnum):
    ACCOUNT = "account"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One entry of the revocation feed; ``cursor`` grows strictly so validators can resume."""

    cursor: int
    kind: RevocationKind
    subject: str  # client id for ACCOUNT, jti for TOKEN
    client_id: str
    revoked_at: datetime
    expires_at: datetime | None = None  # after this nobody needs to remember the entry


@dataclass(frozen=True, slots=True)
class SecretUse:
    """One caller's latest use of one secret, as a usage flush writes it (``caller`` is a source address)."""

    client_id: str
    secret_id: str
    caller: str
    last_used_at: datetime


@dataclass(frozen=True, slots=True)
class SecretUsage:
    """What the store knows of a secret's use: its last use, and how many distinct callers used it lately."""

    last_used_at: datetime
    distinct_callers: int

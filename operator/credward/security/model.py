"""What the security service stores about an account. Plain frozen dataclasses, no I/O.

Secrets are never stored, only their keyed hashes (see ``credward.domain.secrets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class AccountStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # e.g. expired by lifetime; can be re-enabled by the operator
    REVOKED = "revoked"  # blocked: no token is issued and live tokens appear in the revocation feed


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """One live secret of an account: public id, keyed hash, and when it stops being accepted."""

    id: str
    hash: str
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class Permission:
    """Verbs (``read``/``write``) over a path of parts; ``*`` matches one part."""

    verbs: tuple[str, ...]
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoleMapping:
    """One RoleBinding's contribution to an account: the binding's name, its roles and permissions."""

    name: str
    roles: tuple[str, ...] = ()
    permissions: tuple[Permission, ...] = ()


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
    secrets: tuple[SecretRecord, ...] = ()
    role_mappings: tuple[RoleMapping, ...] = field(default=())
    updated_at: datetime | None = None


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

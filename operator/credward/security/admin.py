"""The admin API the operator pushes accounts to: typed request bodies and the store calls they imply.

Bodies carry secret *hashes* (HMAC-SHA256 under the shared hash key) with
their ids and not-after times, never secret values. Every write invalidates
this replica's cached view of the account at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from credward.api import SERVICE_ACCOUNT_VERBS, VERB_GRANT
from credward.domain.claims import identity_for
from credward.errors import CredwardError
from credward.security.accounts import AccountCache
from credward.security.feed import RevocationFeed
from credward.security.metrics import Metrics
from credward.security.model import Account, AccountStatus, Permission, RevocationEvent, RoleMapping, SecretRecord
from credward.security.store.base import Store
from credward.security.store.codec import storable

M = TypeVar("M", bound=BaseModel)
_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9._:@/-]{1,253}$"


def _storable_text(value: str) -> str:
    if not storable(value):
        raise ValueError("must not contain a NUL character or a lone surrogate")
    return value


# Every text the store keeps; NUL and lone surrogates cannot be stored (400 naming the field, not a 500 later).
Text = Annotated[str, AfterValidator(_storable_text)]


class BadAdminRequest(CredwardError):
    """An admin request body is not valid; the message says which field."""


class NotFound(CredwardError):
    """No account with that client id."""


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class SecretIn(_Body):
    id: Text = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    hash: Text = Field(pattern=_HEX64)
    not_after: datetime | None = Field(None, alias="notAfter")


class AccountIn(_Body):
    identity: Text | None = Field(None, max_length=512)
    display_name: Text = Field("", alias="displayName", max_length=256)
    namespace: Text = Field("", max_length=253)
    name: Text = Field("", max_length=253)
    status: Literal["active", "disabled", "revoked"] = "active"
    expires_at: datetime | None = Field(None, alias="expiresAt")
    audiences: tuple[Text, ...] = Field((), max_length=64)
    token_ttl_seconds: int = Field(300, alias="tokenTTLSeconds", ge=1, le=86400)
    groups: tuple[Text, ...] = Field((), max_length=64)
    secrets: tuple[SecretIn, ...] = Field((), max_length=16)


class PermissionIn(_Body):
    verbs: tuple[Text, ...] = Field(min_length=1)
    path: tuple[Text, ...] = ()


class RoleMappingIn(_Body):
    name: Text = Field(pattern=_NAME)
    roles: tuple[Text, ...] = ()
    permissions: tuple[PermissionIn, ...] = ()


class RoleMappingsIn(_Body):
    mappings: tuple[RoleMappingIn, ...] = Field(max_length=256)


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise BadAdminRequest(problems) from None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def account_view(account: Account) -> dict[str, Any]:
    """An account as the admin API shows it: secret ids and times, never hashes."""
    return {
        "clientId": account.client_id,
        "identity": account.identity,
        "displayName": account.display_name,
        "namespace": account.namespace,
        "name": account.name,
        "status": account.status.value,
        "expiresAt": account.expires_at.isoformat() if account.expires_at else None,
        "audiences": list(account.audiences),
        "tokenTTLSeconds": account.token_ttl_seconds,
        "groups": list(account.groups),
        "secrets": [
            {"id": s.id, "notAfter": s.not_after.isoformat() if s.not_after else None} for s in account.secrets
        ],
        "roleMappings": [
            {
                "name": m.name,
                "roles": list(m.roles),
                "permissions": [{"verbs": list(p.verbs), "path": list(p.path)} for p in m.permissions],
            }
            for m in account.role_mappings
        ],
    }


class AdminService:
    def __init__(
        self, store: Store, accounts: AccountCache, feed: RevocationFeed, metrics: Metrics, issuer_host: str
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.feed = feed
        self.metrics = metrics
        self.issuer_host = issuer_host

    async def get(self, client_id: str) -> Account:
        account = await self.store.get_account(client_id)
        if account is None:
            raise NotFound(client_id)
        return account

    async def put_account(self, client_id: str, body: bytes, now: datetime) -> tuple[Account, bool]:
        data = _parse(AccountIn, body)
        existing = await self.store.get_account(client_id)
        account = Account(
            client_id=client_id,
            identity=data.identity or identity_for(client_id, self.issuer_host),
            display_name=data.display_name,
            namespace=data.namespace,
            name=data.name,
            status=AccountStatus(data.status),
            expires_at=_aware(data.expires_at),
            audiences=data.audiences,
            token_ttl_seconds=data.token_ttl_seconds,
            groups=data.groups,
            secrets=tuple(SecretRecord(s.id, s.hash, _aware(s.not_after)) for s in data.secrets),
            role_mappings=existing.role_mappings if existing else (),
            updated_at=now,
        )
        await self.store.put_account(account)
        self.accounts.invalidate(client_id)
        return account, existing is None

    async def set_role_mappings(self, client_id: str, body: bytes) -> Account:
        data = _parse(RoleMappingsIn, body)
        mappings = []
        for m in data.mappings:
            for p in m.permissions:
                if VERB_GRANT in p.verbs:
                    raise BadAdminRequest(f"{m.name}: service accounts can never hold the grant verb")
                unknown = [v for v in p.verbs if v not in SERVICE_ACCOUNT_VERBS]
                if unknown:
                    raise BadAdminRequest(f"{m.name}: unknown verbs {unknown}; allowed: {list(SERVICE_ACCOUNT_VERBS)}")
                if any(not part or "/" in part or part in (".", "..") for part in p.path):
                    raise BadAdminRequest(f"{m.name}: path parts must be non-empty and contain no '/'")
            mappings.append(
                RoleMapping(m.name, m.roles, tuple(Permission(tuple(p.verbs), tuple(p.path)) for p in m.permissions))
            )
        await self.get(client_id)
        await self.store.set_role_mappings(client_id, tuple(mappings))
        self.accounts.invalidate(client_id)
        return await self.get(client_id)

    async def revoke(self, client_id: str, now: datetime) -> RevocationEvent:
        await self.get(client_id)
        event = await self.store.revoke_account(client_id, now)
        self.accounts.invalidate(client_id)
        self.metrics.revocations.labels(kind="account").inc()
        self.feed.notify(event.cursor)
        return event

    async def delete(self, client_id: str) -> None:
        existed = await self.store.delete_account(client_id)
        self.accounts.invalidate(client_id)
        if not existed:
            raise NotFound(client_id)

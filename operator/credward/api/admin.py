"""The admin API's wire models: the one definition the service validates with and the operator sends.

``/openapi.json`` is generated from these models, so the published schema is
what the service enforces. Request bodies validate exactly what the CRDs
validate (same patterns, same limits), and strictly: validate JSON with
``Model.model_validate_json(body, strict=True)`` so that ``"300"`` or
``true`` is not taken for a number. Bodies carry secret *hashes* (HMAC-SHA256
under the shared hash key) with their ids and times, never secret values.
Responses ignore unknown fields, so an operator keeps working against a newer
service.

Endpoints (all under ``/v1/admin``, bearer-authenticated):

* ``PUT accounts/{clientId}`` with :class:`AccountIn` -> :class:`AccountView` (201 created, 200 replaced)
* ``GET accounts/{clientId}`` -> :class:`AccountView`
* ``DELETE accounts/{clientId}`` -> 204 (404 if it did not exist)
* ``PUT accounts/{clientId}/role-mappings`` with :class:`RoleMappingsIn` -> :class:`AccountView`
* ``POST accounts/{clientId}/revoke`` -> the revocation feed event
* ``GET info`` -> :class:`ServiceInfo` (cheap: lets the operator notice an empty or replaced store)
* ``POST batch`` with :class:`BatchIn` -> :class:`BatchOut`: many of the gets, puts and role-mapping
  replacements above in one request, each answered as its own endpoint would (not one transaction)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from credward.api.models import Permission, distinct

CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"  # no '.', '%' or '/': safe in a URL path as it is
SECRET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
HASH_PATTERN = r"^[0-9a-f]{64}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP_PATTERN = r"^(/[A-Za-z0-9._-]+)+$"
ROLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$"
AUDIENCE_PATTERN = r"^\S{1,256}$"


def _storable(value: str) -> str:
    """Text every store can keep: no NUL, no lone surrogate (a 400 naming the field, not a 500 later)."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain a lone surrogate") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
ClientId = Annotated[str, StringConstraints(pattern=CLIENT_ID_PATTERN)]
Group = Annotated[str, StringConstraints(pattern=GROUP_PATTERN, max_length=256)]
Audience = Annotated[str, StringConstraints(pattern=AUDIENCE_PATTERN), AfterValidator(_storable)]
Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]
AccountStatusName = Literal["active", "disabled", "revoked"]


class _In(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class SecretHash(_In):
    """One live secret of an account: its public id, keyed hash, and times."""

    id: Annotated[str, StringConstraints(pattern=SECRET_ID_PATTERN)]
    hash: Annotated[str, StringConstraints(pattern=HASH_PATTERN)]
    created_at: AwareDatetime | None = Field(None, alias="createdAt")
    not_after: AwareDatetime | None = Field(None, alias="notAfter", description="not accepted from this time on")


class AccountIn(_In):
    """``PUT /v1/admin/accounts/{clientId}``: the whole account, replacing what the service held (not its roles)."""

    identity: Annotated[Text, StringConstraints(max_length=512)] | None = Field(
        None, description="the JWT sub; default <clientId>@clients.<issuer host>"
    )
    display_name: Annotated[Text, StringConstraints(max_length=128)] = Field("", alias="displayName")
    namespace: Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN)] | None = None
    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None = None
    status: AccountStatusName = "active"
    expires_at: AwareDatetime | None = Field(None, alias="expiresAt")
    audiences: Annotated[tuple[Audience, ...], Field(max_length=16), AfterValidator(distinct)] = ()
    token_ttl_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(300, alias="tokenTTLSeconds")
    groups: Annotated[tuple[Group, ...], Field(max_length=16), AfterValidator(distinct)] = ()
    secrets: Annotated[tuple[SecretHash, ...], Field(max_length=16)] = ()


class RoleMapping(_In):
    """One RoleBinding's contribution to an account: its name, roles and permissions."""

    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
    roles: Annotated[tuple[Role, ...], Field(max_length=32), AfterValidator(distinct)] = ()
    permissions: Annotated[tuple[Permission, ...], Field(max_length=64)] = ()


def _distinct_names(mappings: tuple[RoleMapping, ...]) -> tuple[RoleMapping, ...]:
    if len({m.name for m in mappings}) != len(mappings):
        raise ValueError("mapping names must be distinct")
    return mappings


class RoleMappingsIn(_In):
    """``PUT /v1/admin/accounts/{clientId}/role-mappings``: every binding of the account, replacing the old set."""

    mappings: Annotated[tuple[RoleMapping, ...], Field(max_length=256), AfterValidator(_distinct_names)]


class SecretView(_Out):
    """A secret as the admin API shows it: id, times and use, never the hash."""

    id: str
    created_at: AwareDatetime | None = Field(None, alias="createdAt")
    not_after: AwareDatetime | None = Field(None, alias="notAfter")
    last_used_at: AwareDatetime | None = Field(
        None,
        alias="lastUsedAt",
        description="the last time a request authenticated with this secret (absent: never seen); "
        "flushed in batches, so up to the service's usage flush interval old on other replicas",
    )
    distinct_callers: int = Field(
        0,
        alias="distinctCallers",
        ge=0,
        description="distinct source addresses that used this secret within the service's usage window "
        "(counted up to a bound, so a lower bound beyond it)",
    )


class AccountView(_Out):
    """What the service holds for an account."""

    client_id: str = Field(alias="clientId")
    identity: str
    display_name: str = Field("", alias="displayName")
    namespace: str | None = None
    name: str | None = None
    status: AccountStatusName
    expires_at: AwareDatetime | None = Field(None, alias="expiresAt")
    audiences: tuple[str, ...] = ()
    token_ttl_seconds: int = Field(alias="tokenTTLSeconds")
    effective_token_ttl_seconds: int = Field(
        alias="effectiveTokenTTLSeconds", description="tokenTTLSeconds capped by the service's maximum token lifetime"
    )
    groups: tuple[str, ...] = ()
    secrets: tuple[SecretView, ...] = ()
    role_mappings: tuple[RoleMapping, ...] = Field((), alias="roleMappings")
    updated_at: AwareDatetime | None = Field(None, alias="updatedAt")


class ServiceInfo(_Out):
    """``GET /v1/admin/info``: a cheap view that tells the operator the store it pushed to is still the same.

    ``storeId`` is created with the store and changes when the store is wiped or replaced;
    ``hashKeyId`` names the secret-hash key (:func:`credward.domain.secrets.hash_key_id`), so a
    mismatched key is caught before tokens fail.
    """

    store_id: str = Field(alias="storeId")
    accounts: int
    hash_key_id: str = Field(alias="hashKeyId")
    max_token_ttl_seconds: int = Field(alias="maxTokenTTLSeconds")


BATCH_MAX_OPERATIONS = 256  # a full batch of puts stays well inside the admin API's 1 MiB body limit
BatchOp = Literal["get", "put", "role-mappings"]


class BatchOperation(_In):
    """One operation of ``POST /v1/admin/batch``: ``get``, ``put`` (with ``account``) or ``role-mappings``."""

    op: BatchOp
    client_id: ClientId = Field(alias="clientId")
    account: AccountIn | None = Field(None, description="for put: the whole account")
    mappings: RoleMappingsIn | None = Field(None, description="for role-mappings: the account's whole set")

    @model_validator(mode="after")
    def _body_matches_op(self) -> BatchOperation:
        if (self.op == "put") != (self.account is not None):
            raise ValueError("account is required for op put, and only for it")
        if (self.op == "role-mappings") != (self.mappings is not None):
            raise ValueError("mappings is required for op role-mappings, and only for it")
        return self


def _distinct_accounts(operations: tuple[BatchOperation, ...]) -> tuple[BatchOperation, ...]:
    if len({(o.op, o.client_id) for o in operations}) != len(operations):
        raise ValueError("an operation may name each client id once")
    return operations


class BatchIn(_In):
    """``POST /v1/admin/batch``: operations carried out in order, each on its own (no transaction)."""

    operations: Annotated[
        tuple[BatchOperation, ...],
        Field(min_length=1, max_length=BATCH_MAX_OPERATIONS),
        AfterValidator(_distinct_accounts),
    ]


class BatchResult(_Out):
    """One operation's answer: the HTTP status its own endpoint gives, the account, or the refusal."""

    client_id: str = Field(alias="clientId")
    status: int
    account: AccountView | None = None
    error: str | None = Field(None, description="for a status of 400 or more: the error_description")


class BatchOut(_Out):
    """``POST /v1/admin/batch``'s answer: one result per operation, in order."""

    results: tuple[BatchResult, ...]

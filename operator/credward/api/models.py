"""Typed models of the CRDs' spec and status.

``crds/*.yaml`` is the source of truth for the schema and its validation (the
API server enforces it); these models mirror it so that code reads typed
fields instead of dictionaries. Unknown fields are ignored, not rejected: the
API server has already pruned them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

from credward.domain import paths
from credward.domain.durations import parse_duration
from credward.domain.timefmt import to_rfc3339

DEFAULT_TOKEN_TTL = "5m"
DEFAULT_ROTATION_PERIOD = "720h"
DEFAULT_GRACE_PERIOD = "24h"
DEFAULT_QUIET_PERIOD = "15m"
DEFAULT_EXPIRY_WARNING = "168h"
# Without spec.rotation.maxOverlap, a previous secret stops at the latest this many grace periods after a rotation.
DEFAULT_MAX_OVERLAP_GRACE_PERIODS = 2


# Kubernetes timestamps: RFC 3339, UTC, whole seconds, ``Z``.
Timestamp = Annotated[datetime, PlainSerializer(to_rfc3339, return_type=str, when_used="json")]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Rotation(_Model):
    period: str = DEFAULT_ROTATION_PERIOD
    grace_period: str = Field(DEFAULT_GRACE_PERIOD, alias="gracePeriod")
    quiet_period: str = Field(DEFAULT_QUIET_PERIOD, alias="quietPeriod")
    max_overlap: str | None = Field(None, alias="maxOverlap")

    @property
    def period_td(self) -> timedelta:
        return parse_duration(self.period)

    @property
    def grace_period_td(self) -> timedelta:
        return parse_duration(self.grace_period)

    @property
    def quiet_period_td(self) -> timedelta:
        return parse_duration(self.quiet_period)

    @property
    def max_overlap_td(self) -> timedelta:
        """The hard cap of an overlap: ``maxOverlap``, or twice the grace period (never below the grace period)."""
        if self.max_overlap is None:
            return self.grace_period_td * DEFAULT_MAX_OVERLAP_GRACE_PERIODS
        return max(parse_duration(self.max_overlap), self.grace_period_td)


class SecretTemplate(_Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class CredentialSpec(_Model):
    """``ServiceAccountCredential.spec``."""

    display_name: str = Field(alias="displayName")
    description: str = ""
    lifetime: str | None = None
    expiry_warning: str = Field(DEFAULT_EXPIRY_WARNING, alias="expiryWarning")
    token_ttl: str = Field(DEFAULT_TOKEN_TTL, alias="tokenTTL")
    audiences: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    rotation: Rotation = Field(default_factory=Rotation)
    secret_name: str | None = Field(None, alias="secretName")
    secret_template: SecretTemplate = Field(default_factory=SecretTemplate, alias="secretTemplate")
    revoked: bool = False

    def effective_secret_name(self, credential_name: str) -> str:
        return self.secret_name or f"{credential_name}-credentials"

    @property
    def lifetime_td(self) -> timedelta | None:
        return parse_duration(self.lifetime) if self.lifetime else None

    @property
    def token_ttl_td(self) -> timedelta:
        return parse_duration(self.token_ttl)

    @property
    def expiry_warning_td(self) -> timedelta:
        return parse_duration(self.expiry_warning)


class ActiveSecret(_Model):
    """One live secret of an account: its public id and times, never its value."""

    id: str
    created_at: Timestamp = Field(alias="createdAt")
    not_after: Timestamp | None = Field(None, alias="notAfter")
    last_used_at: Timestamp | None = Field(None, alias="lastUsedAt")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """A status condition in the standard Kubernetes (metav1.Condition) shape."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: Timestamp = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class CredentialStatus(_Model):
    """``ServiceAccountCredential.status``."""

    client_id: str | None = Field(None, alias="clientId")
    identity: str | None = None
    secret_name: str | None = Field(None, alias="secretName")
    active_secrets: tuple[ActiveSecret, ...] = Field((), alias="activeSecrets")
    last_rotation_time: Timestamp | None = Field(None, alias="lastRotationTime")
    next_rotation_time: Timestamp | None = Field(None, alias="nextRotationTime")
    expires_at: Timestamp | None = Field(None, alias="expiresAt")
    observed_generation: int | None = Field(None, alias="observedGeneration")
    conditions: tuple[Condition, ...] = ()


def distinct(values: tuple[str, ...]) -> tuple[str, ...]:
    """A validator: the values must be distinct (as the CRDs' list-type set asks)."""
    if len(set(values)) != len(values):
        raise ValueError("values must be distinct")
    return values


Verb = Literal["read", "write"]
# One part as written (the published schema); paths.normalize then applies the whole rule.
PathPart = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9._~-]{1,64}|\*)$")]


class Permission(_Model):
    """Verbs over a path, in the canonical form of :mod:`credward.domain.paths` (a trailing ``*`` dropped).

    The one model of a permission: the CRD model, the admin API and the service's store all use it.
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    verbs: Annotated[tuple[Verb, ...], Field(min_length=1, max_length=2), AfterValidator(distinct)]
    path: Annotated[
        tuple[PathPart, ...],
        Field(min_length=1, max_length=paths.MAX_PARTS),
        AfterValidator(paths.normalize),
        Field(description="parts; a path grants itself and everything below it; '*' only as the last part"),
    ]


class RoleBindingSpec(_Model):
    """``RoleBinding.spec`` (group credward.io)."""

    service_account: str = Field(alias="serviceAccount")
    roles: tuple[str, ...] = ()
    permissions: tuple[Permission, ...] = ()


class RoleBindingStatus(_Model):
    """``RoleBinding.status`` (group credward.io)."""

    observed_generation: int | None = Field(None, alias="observedGeneration")
    conditions: tuple[Condition, ...] = ()

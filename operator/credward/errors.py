"""credward's exceptions: one tree, sorted into API answers at the edges.

::

    CredwardError
    ├── InvalidSpec            a resource's spec cannot be acted on (-> kopf.PermanentError)
    │   ├── InvalidDuration    a duration string is malformed or out of range
    │   └── PathError          a permission path breaks the path rule (also a ValueError)
    ├── Conflict               an object credward must write is owned by someone else
    │   └── SecretConflict     a Secret of the wanted name exists and is not ours
    ├── TransientError         worth retrying later (-> kopf.TemporaryError)
    │   └── ServiceUnavailable the security service did not answer
    ├── AuthError              the security service's OAuth2 errors (RFC 6749 §5.2)
    │   ├── InvalidClient
    │   ├── InvalidRequest
    │   ├── InvalidScope
    │   ├── InvalidTarget      RFC 8707
    │   ├── UnsupportedGrantType
    │   ├── UnauthorizedClient RFC 7009: revoking another client's token
    │   └── Throttled          too many failed authentications (429 + Retry-After)
    └── AdminAuthError         the security service's admin API refused the caller
        ├── Unauthenticated    no or invalid credentials (401)
        └── Forbidden          authenticated but not on the allow-list (403)

Messages never contain a secret value.
"""

from __future__ import annotations


class CredwardError(Exception):
    """Base of every error credward raises on purpose."""


class InvalidSpec(CredwardError):
    """A resource's spec cannot be acted on; retrying will not help until it is edited."""


class InvalidDuration(InvalidSpec):
    """A duration string is malformed or out of range."""


class PathError(InvalidSpec, ValueError):
    """A path breaks the one path rule (credward.domain.paths); the message says why and how to write it."""


class Conflict(CredwardError):
    """An object credward must write exists and belongs to someone else."""


class SecretConflict(Conflict):
    """A Secret of the wanted name exists and is not owned by this credential."""


class TransientError(CredwardError):
    """Worth retrying after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ServiceUnavailable(TransientError):
    """The security service could not be reached or answered 5xx."""


class AuthError(CredwardError):
    """An OAuth2 error with its RFC 6749 §5.2 code and HTTP status."""

    error = "invalid_request"
    status_code = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(AuthError):
    error = "invalid_request"


class InvalidClient(AuthError):
    error = "invalid_client"
    status_code = 401


class InvalidScope(AuthError):
    error = "invalid_scope"


class InvalidTarget(AuthError):
    error = "invalid_target"


class UnsupportedGrantType(AuthError):
    error = "unsupported_grant_type"


class UnauthorizedClient(AuthError):
    error = "unauthorized_client"


class Throttled(AuthError):
    """Too many failed authentications from this client or address; retry after ``retry_after`` seconds."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class AdminAuthError(CredwardError):
    """The admin API refused the caller."""

    status_code = 401


class Unauthenticated(AdminAuthError):
    status_code = 401


class Forbidden(AdminAuthError):
    status_code = 403

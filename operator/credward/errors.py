"""credward's exceptions: one tree, sorted into API answers at the edges.

::

    CredwardError
    ├── InvalidSpec            a resource's spec cannot be acted on (-> kopf.PermanentError)
    │   └── InvalidDuration    a duration string is malformed or out of range
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
    ├── AdminAuthError         the security service's admin API refused the caller
    │   ├── Unauthenticated    no or invalid credentials (401)
    │   └── Forbidden          authenticated but not on the allow-list (403)
    ├── HashKeyError           the secret-hash key file shared by operator and service is unusable
    ├── SettingsError          a configuration (flags, environment) is missing or malformed (exit 2 at start)
    ├── KeyLoadError           a signing key file is missing, unreadable or of the wrong type
    ├── KubeConfigError        the admin API's kubeconfig or in-cluster credentials cannot be used
    └── ServiceError           the security service refused a request (mapped to HTTP in credward.security.edge)
        ├── BadAdminRequest    an admin request is malformed; the message names the field (400)
        │   └── UnstorableText a text holds NUL or a lone surrogate, which no store can keep (400)
        ├── NotFound           no such resource, e.g. account (404)
        └── BodyTooLarge       a request body exceeds the endpoint's limit (413)

Messages never contain a secret value.
"""

from __future__ import annotations


class CredwardError(Exception):
    """Base of every error credward raises on purpose."""


class InvalidSpec(CredwardError):
    """A resource's spec cannot be acted on; retrying will not help until it is edited."""


class InvalidDuration(InvalidSpec):
    """A duration string is malformed or out of range."""


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


# --- the security service's request errors ----------------------------------------------------------------------
# Raised by credward.security's services and stores; credward.security.edge is the one place that turns every
# CredwardError into an HTTP answer.


class ServiceError(CredwardError):
    """The security service refused a request; ``status_code`` and ``error`` are its HTTP answer."""

    status_code = 400
    error = "invalid_request"


class BadAdminRequest(ServiceError):
    """An admin request (path or body) is not valid; the message says which field and why."""


class UnstorableText(BadAdminRequest):
    """A text holds a NUL character or a lone surrogate, which the stores cannot keep.

    PostgreSQL text and jsonb have no NUL; a lone surrogate (which a JSON ``\\ud800`` escape smuggles into a
    Python string) has no UTF-8 form. Both backends refuse such text on write, so they behave alike.
    """


class NotFound(ServiceError):
    """No such resource (an account, or a path the service does not serve)."""

    status_code = 404
    error = "not_found"


class BodyTooLarge(ServiceError):
    """A request body is larger than the endpoint accepts; it was not read past the limit."""

    status_code = 413


class HashKeyError(CredwardError):
    """The secret-hash key shared by the operator and the service is missing or too short."""


class SettingsError(CredwardError):
    """One or more configuration keys are missing or malformed; the message names each of them."""


class KeyLoadError(CredwardError):
    """A key file is missing, unreadable, or of the wrong type (message names the file, never key bytes)."""


class KubeConfigError(CredwardError):
    """The kubeconfig or in-cluster credentials cannot be used."""

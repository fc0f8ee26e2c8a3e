"""credward's exceptions: one tree, sorted into answers or conditions at the edges.

::

    CredwardError
    ├── InvalidSpec            a resource's spec or the configuration cannot be acted on; editing it helps
    │   ├── InvalidDuration    a duration string is malformed or out of range
    │   ├── SettingsError      a configuration key (flag or environment variable) is missing or malformed
    │   └── PathError          a permission path breaks the path rule (also a ValueError)
    ├── TransientError         worth retrying after ``delay`` seconds (the operator backs off, capped)
    │   ├── ServiceUnavailable the security service did not answer, answered 5xx/429, or made no sense
    │   └── KubeUnavailable    the Kubernetes API server did not answer, answered 5xx/429, or a write conflicted
    ├── Refused                a server refused a request; retrying unchanged will not help
    │   ├── ServiceRefused     the admin API refused the operator's request (4xx, with the service's message)
    │   └── KubeRefused        the API server refused a write (4xx, with the server's message)
    ├── Gone                   the object, or the namespace it lives in, no longer exists
    │   └── NamespaceTerminating  the namespace is being deleted: nothing new may be written there
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
    ├── KeyLoadError           a signing key file is missing, unreadable or of the wrong type
    ├── KubeConfigError        the admin API's kubeconfig or in-cluster credentials cannot be used
    └── ServiceError           the security service refused a request (mapped to HTTP in credward.security.edge)
        ├── BadAdminRequest    an admin request is malformed; the message names the field (400)
        │   └── UnstorableText a text holds NUL or a lone surrogate, which no store can keep (400)
        ├── NotFound           no such resource, e.g. account (404)
        └── BodyTooLarge       a request body exceeds the endpoint's limit (413)

The operator maps the Kubernetes client's errors (``ApiException``,
``aiohttp.ClientError``, timeouts) in ``credward.operator.kube`` and the admin
API client's (httpx) in ``credward.operator.service``; nothing else of theirs
reaches the controller. There, ``TransientError`` means "back off and retry",
``Refused`` becomes a condition and a Warning Event, ``Gone`` ends the work on
that object, and anything else is a bug: logged, counted, retried with backoff.

Messages never contain a secret value.
"""

from __future__ import annotations


class CredwardError(Exception):
    """Base of every error credward raises on purpose."""


class InvalidSpec(CredwardError):
    """A resource's spec cannot be acted on; retrying will not help until it is edited."""


class InvalidDuration(InvalidSpec):
    """A duration string is malformed or out of range."""


class SettingsError(InvalidSpec):
    """A configuration key is missing or malformed; the message names it."""


class PathError(InvalidSpec, ValueError):
    """A path breaks the one path rule (credward.domain.paths); the message says why and how to write it."""


class TransientError(CredwardError):
    """Worth retrying after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ServiceUnavailable(TransientError):
    """The security service could not be reached, answered 5xx or 429, or gave an answer that makes no sense."""


class KubeUnavailable(TransientError):
    """The Kubernetes API server could not be reached, answered 5xx or 429, or a write lost a race (409)."""


class Refused(CredwardError):
    """A server refused a request; ``message`` is its own words (never holding a secret value)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class ServiceRefused(Refused):
    """The security service's admin API refused the operator's request (4xx)."""


class KubeRefused(Refused):
    """The Kubernetes API server refused a request (4xx other than 404, 409 and NamespaceTerminating)."""


class Gone(CredwardError):
    """The object, or its namespace, no longer exists: there is nothing left to do for it."""


class NamespaceTerminating(Gone):
    """The namespace is being deleted; the API server refuses to create anything in it (403)."""


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


class KeyLoadError(CredwardError):
    """A key file is missing, unreadable, or of the wrong type (message names the file, never key bytes)."""


class KubeConfigError(CredwardError):
    """The kubeconfig or in-cluster credentials cannot be used."""

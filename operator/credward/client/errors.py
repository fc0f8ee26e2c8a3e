"""What ``credward.client`` raises: branches of credward's one error tree (:mod:`credward.errors`).

::

    CredwardError
    ├── ClientConfigError          a setting is missing or malformed, a credential file unreadable
    ├── AuthError
    │   └── TokenEndpointError     the token endpoint answered an RFC 6749 §5.2 error (code + description)
    ├── ServiceUnavailable
    │   └── IssuerUnavailable      discovery, JWKS, feed or token endpoint unreachable or 5xx
    ├── InvalidToken               a token failed verification; ``check`` names the check (RFC 6750 invalid_token)
    └── InsufficientScope          a valid token does not grant what is asked (RFC 6750 insufficient_scope)

Messages name checks, claims and client ids, never a secret or a whole token.
"""

from __future__ import annotations

from enum import StrEnum

from credward.errors import AuthError, CredwardError, ServiceUnavailable


class ClientConfigError(CredwardError):
    """The client cannot be configured: the message names the missing or malformed setting or file."""


class TokenEndpointError(AuthError):
    """The token endpoint refused the request with an RFC 6749 §5.2 error."""

    def __init__(self, error: str, description: str, status_code: int) -> None:
        super().__init__(description)
        self.error = error
        self.status_code = status_code

    def __str__(self) -> str:
        return f"token endpoint refused the request ({self.status_code} {self.error}): {self.description}"


class IssuerUnavailable(ServiceUnavailable):
    """The issuer (discovery, JWKS, revocation feed or token endpoint) did not answer usefully."""


class Check(StrEnum):
    """The check a token failed (``InvalidToken.check``) or the grant it lacks (``InsufficientScope.check``)."""

    FORMAT = "format"  # not a compact JWS with JSON header and claims
    ALGORITHM = "alg"  # the header's alg is not the key's, or not an allowed asymmetric algorithm
    KEY = "kid"  # no published key has this id (after a JWKS refresh)
    SIGNATURE = "signature"
    ISSUER = "iss"
    AUDIENCE = "aud"
    EXPIRED = "exp"
    NOT_YET_VALID = "nbf"
    ISSUED_AT = "iat"
    REQUIRED_CLAIM = "required_claim"
    REVOKED = "revoked"  # the revocation feed named the token or its account
    SCOPE = "scope"
    ROLE = "role"


class InvalidToken(CredwardError):
    """A token failed verification: answer 401 with ``WWW-Authenticate: Bearer error="invalid_token"``."""

    error = "invalid_token"
    status_code = 401

    def __init__(self, check: Check, message: str) -> None:
        super().__init__(f"token refused ({check.value}): {message}")
        self.check = check
        self.reason = message


class InsufficientScope(CredwardError):
    """A verified token does not grant the verb, path or role: answer 403 (``insufficient_scope``)."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, check: Check, message: str) -> None:
        super().__init__(f"not authorized ({check.value}): {message}")
        self.check = check
        self.reason = message

"""What workloads and resource servers import: a self-renewing token authorizer and a token validator.

Workloads::

    from credward.client import ClientCredentialsAuthorizer

    auth = ClientCredentialsAuthorizer.from_env()  # CLIENT_ID, CLIENT_SECRET_PATH, SECURITY_BASE_URL
    httpx.get("https://storage.example/store/x", auth=auth)  # or requests.get(..., auth=auth)

Resource servers::

    from credward.client import TokenValidator, bearer_token

    validator = TokenValidator(issuer, audience="https://storage.example")
    token = validator.verify(bearer_token(request.headers.get("Authorization")))
    token.require("read", request.url.path)

This package imports neither the operator nor the security service.
"""

from credward.client.access import Grant
from credward.client.authorizer import ClientCredentialsAuthorizer
from credward.client.credentials import ClientSettings
from credward.client.errors import (
    Check,
    ClientConfigError,
    InsufficientScope,
    InvalidToken,
    IssuerUnavailable,
    TokenEndpointError,
)
from credward.client.validator import AccessToken, FeedState, TokenValidator, bearer_token

__all__ = [
    "AccessToken",
    "Check",
    "ClientConfigError",
    "ClientCredentialsAuthorizer",
    "ClientSettings",
    "FeedState",
    "Grant",
    "InsufficientScope",
    "InvalidToken",
    "IssuerUnavailable",
    "TokenEndpointError",
    "TokenValidator",
    "bearer_token",
]

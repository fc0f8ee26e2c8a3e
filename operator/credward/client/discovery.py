"""The issuer's metadata (RFC 8414 / OpenID discovery) and JSON answers, checked, without doing I/O.

Requests are built as ``httpx.Request`` objects and answers parsed from
``httpx.Response`` objects, so the synchronous and asynchronous paths of the
authorizer and the validator send the same bytes and read them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from credward.client.errors import IssuerUnavailable

WELL_KNOWN = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of the discovery document credward's client uses."""

    issuer: str
    token_endpoint: str | None
    jwks_uri: str | None
    revocation_feed_endpoint: str | None


def metadata_request(base_url: str) -> httpx.Request:
    return httpx.Request("GET", base_url.rstrip("/") + WELL_KNOWN, headers={"Accept": "application/json"})


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object of a 200 answer, or :class:`IssuerUnavailable` saying what was fetched and what came."""
    if response.status_code != 200:
        raise IssuerUnavailable(f"{what} at {response.request.url} answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise IssuerUnavailable(f"{what} at {response.request.url} is not JSON") from None
    if not isinstance(body, dict):
        raise IssuerUnavailable(f"{what} at {response.request.url} is not a JSON object")
    return body


def parse_metadata(response: httpx.Response, expected_issuer: str | None = None) -> Metadata:
    """The metadata; with ``expected_issuer``, refuse a document of another issuer (RFC 8414 §3.3)."""
    doc = json_object(response, "discovery document")
    issuer = doc.get("issuer")
    if not isinstance(issuer, str):
        raise IssuerUnavailable(f"discovery document at {response.request.url} has no issuer")
    if expected_issuer is not None and issuer != expected_issuer:
        raise IssuerUnavailable(f"discovery document names issuer {issuer!r}, expected {expected_issuer!r}")

    def url(name: str) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) else None

    return Metadata(issuer, url("token_endpoint"), url("jwks_uri"), url("revocation_feed_endpoint"))


def transport_error(what: str, url: str, exc: httpx.HTTPError) -> IssuerUnavailable:
    return IssuerUnavailable(f"{what} at {url} unreachable: {type(exc).__name__}")

"""Parsing a token request (RFC 6749 §4.4) into a typed value, with §5.2 errors.

Pure: bytes and header strings in, :class:`TokenRequest` out. Client secrets
pass through here but never into an exception message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from credward.errors import InvalidClient, InvalidRequest, InvalidTarget, UnsupportedGrantType

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
MAX_BODY_BYTES = 16 * 1024
_MAX_FIELDS = 64
# Parameters that may repeat (RFC 8707 allows several resources; "audience" follows it).
_REPEATABLE = frozenset({"resource", "audience"})
_MAX_CREDENTIAL_LENGTH = 512


class AuthMethod(StrEnum):
    BASIC = "client_secret_basic"
    POST = "client_secret_post"


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    method: AuthMethod


@dataclass(frozen=True, slots=True)
class TokenRequest:
    grant_type: str
    credentials: ClientCredentials
    scope: str | None
    audiences: tuple[str, ...]


def parse_form(body: bytes, content_type: str | None) -> dict[str, list[str]]:
    """Decode an ``application/x-www-form-urlencoded`` body; parameters keep their order of values."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise InvalidRequest(f"the request body must be {FORM_CONTENT_TYPE}")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest("the request body is too large")
    try:
        text = body.decode("utf-8")
        if "%" in text or "+" in text or text.count("&") >= _MAX_FIELDS:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS, errors="strict")
        else:  # nothing to unescape: the same pairs parse_qsl would give, several times faster
            pairs = [(k, v) for k, _, v in (p.partition("=") for p in text.split("&") if p)]
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the request body is not valid form data") from None
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    return form


def single(form: dict[str, list[str]], name: str) -> str | None:
    """A parameter that must appear at most once (RFC 6749 §3.2); empty counts as absent (§3.1)."""
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"parameter {name!r} is repeated")
    return values[0] or None


def parse_basic(authorization: str) -> ClientCredentials:
    """RFC 6749 §2.3.1: ``Basic base64(urlencode(id) ":" urlencode(secret))``."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported client authentication scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("malformed basic credentials") from None
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed basic credentials")
    client_id, client_secret = _unquote(raw_id), _unquote(raw_secret)
    _check_credentials(client_id, client_secret)
    return ClientCredentials(client_id, client_secret, AuthMethod.BASIC)


def choose_credentials(
    body_id: str | None, body_secret: str | None, basic: ClientCredentials | None
) -> ClientCredentials:
    """Exactly one of client_secret_basic (already parsed from the header) and client_secret_post (RFC 6749 §2.3)."""
    if basic is not None:
        if body_secret is not None:
            raise InvalidRequest("use only one client authentication method")
        if body_id is not None and body_id != basic.client_id:
            raise InvalidRequest("client_id in the body does not match the authenticated client")
        return basic
    if body_id is None or body_secret is None:
        raise InvalidClient("client authentication is required")
    _check_credentials(body_id, body_secret)
    return ClientCredentials(body_id, body_secret, AuthMethod.POST)


def client_credentials(form: dict[str, list[str]], authorization: str | None) -> ClientCredentials:
    """The client's credentials from the form and the Authorization header (see :func:`choose_credentials`)."""
    basic = parse_basic(authorization) if authorization else None
    return choose_credentials(single(form, "client_id"), single(form, "client_secret"), basic)


@dataclass(frozen=True, slots=True)
class TokenForm:
    """A token request body (RFC 6749 §4.4.2) as parsed, before client authentication is decided."""

    grant_type: str
    scope: str | None
    audiences: tuple[str, ...]
    client_id: str | None
    client_secret: str | None = field(repr=False)


def parse_token_form(body: bytes, content_type: str | None) -> TokenForm:
    """The body of a client-credentials token request; the grant type is checked here, credentials are not."""
    form = parse_form(body, content_type)
    grant_type = single(form, "grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    if grant_type != GRANT_CLIENT_CREDENTIALS:
        raise UnsupportedGrantType("only the client_credentials grant is supported")
    return TokenForm(
        grant_type,
        single(form, "scope"),
        requested_audiences(form),
        single(form, "client_id"),
        single(form, "client_secret"),
    )


def parse_token_request(body: bytes, content_type: str | None, authorization: str | None) -> TokenRequest:
    """The whole request at once (body, then credentials): what a server that has read the body already needs."""
    form = parse_token_form(body, content_type)
    basic = parse_basic(authorization) if authorization else None
    credentials = choose_credentials(form.client_id, form.client_secret, basic)
    return TokenRequest(form.grant_type, credentials, form.scope, form.audiences)


def requested_audiences(form: dict[str, list[str]]) -> tuple[str, ...]:
    """RFC 8707 ``resource`` (absolute URIs without fragment) plus ``audience`` values."""
    resources = [r for r in form.get("resource", ()) if r]
    for resource in resources:
        try:
            absolute = bool(urlsplit(resource).scheme)
        except ValueError:
            absolute = False
        if not absolute or "#" in resource:
            raise InvalidTarget("resource must be an absolute URI without a fragment")
    audiences = [a for a in form.get("audience", ()) if a]
    return tuple(dict.fromkeys([*resources, *audiences]))


def _unquote(text: str) -> str:
    return unquote_plus(text) if "%" in text or "+" in text else text


def _check_credentials(client_id: str, client_secret: str) -> None:
    if not client_id or not client_secret:
        raise InvalidClient("client authentication is required")
    if len(client_id) > _MAX_CREDENTIAL_LENGTH or len(client_secret) > _MAX_CREDENTIAL_LENGTH:
        raise InvalidClient("client authentication failed")

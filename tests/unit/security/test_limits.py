"""The limits layer's head checks and the HTTP limit settings: pure rules, no server."""

from __future__ import annotations

from typing import Any

import pytest

from credward.security.limits import (
    BAD_HOST,
    BAD_LENGTH,
    ENCODED_SLASH,
    TOO_LARGE,
    TOO_MANY_HEADERS,
    HttpLimits,
    _precheck,
)
from credward.security.settings import HttpServerKind, SettingsError, load_settings

pytestmark = pytest.mark.unit

LIMITS = HttpLimits(max_headers=4, max_body_bytes=100)
REQUIRED = {
    "issuer": "https://credward.example",
    "store_url": "sqlite:///x.db",
    "hash_key_file": "h",
    "keys_dir": "k",
    "admin_auth": "bearer-file",
    "admin_token_file": "t",
}


def scope(headers: list[tuple[bytes, bytes]], version: str = "1.1", raw_path: bytes = b"/oauth2/token") -> Any:
    return {"type": "http", "http_version": version, "headers": headers, "raw_path": raw_path, "path": "/"}


@pytest.mark.parametrize(
    ("headers", "version", "raw_path", "expected"),
    [
        ([(b"host", b"x")], "1.1", b"/oauth2/token", None),
        ([(b"host", b"x"), (b"content-length", b"100")], "1.1", b"/oauth2/token", None),
        ([(b"host", b"x"), (b"content-length", b"101")], "1.1", b"/oauth2/token", TOO_LARGE),
        ([(b"host", b"x"), (b"content-length", b"-1")], "1.1", b"/oauth2/token", BAD_LENGTH),
        ([(b"host", b"x"), (b"content-length", b"1e3")], "1.1", b"/oauth2/token", BAD_LENGTH),
        ([], "1.1", b"/", BAD_HOST),
        ([(b"host", b"")], "1.1", b"/", BAD_HOST),  # granian's stand-in for a missing Host
        ([(b"host", b"")], "1", b"/", None),  # HTTP/1.0 may omit it
        ([(b"host", b"x"), (b"host", b"y")], "1", b"/", BAD_HOST),
        ([(b"host", b"x")] + [(b"x-h", b"v")] * 4, "1.1", b"/", TOO_MANY_HEADERS),
        ([(b"host", b"x")], "1.1", b"/oauth2%2Ftoken", ENCODED_SLASH),
        ([(b"host", b"x")], "1.1", b"/oauth2%2ftoken", ENCODED_SLASH),
        ([(b"host", b"x")], "1.1", b"/v1/revocations?since=%2F", None),  # the query is not the path
    ],
)
def test_head_checks(headers: Any, version: str, raw_path: bytes, expected: Any) -> None:
    assert _precheck(scope(headers, version, raw_path), LIMITS) == expected


def test_refusals_close_the_connection_and_are_not_cached() -> None:
    for status, headers, _ in (BAD_HOST, TOO_LARGE, TOO_MANY_HEADERS, ENCODED_SLASH):
        assert (b"connection", b"close") in headers
        assert (b"cache-control", b"no-store") in headers
        assert status >= 400


def test_http_limits_have_documented_defaults() -> None:
    settings = load_settings(REQUIRED, {})
    assert settings.http_server is HttpServerKind.GRANIAN
    assert (settings.header_timeout, settings.body_timeout, settings.shutdown_timeout) == (10.0, 10.0, 10.0)
    assert (settings.max_header_bytes, settings.max_headers, settings.max_body_bytes) == (16384, 64, 1048576)
    assert (settings.max_concurrency, settings.max_connections, settings.backlog) == (256, 10000, 1024)
    assert settings.keep_alive is True


def test_http_limits_come_from_flags_or_the_environment() -> None:
    env = {"CREDWARD_SECURITY_MAX_BODY_BYTES": "4096", "CREDWARD_SECURITY_HEADER_TIMEOUT": "2500ms"}
    settings = load_settings({**REQUIRED, "max_headers": "10", "keep_alive": "false"}, env)
    assert (settings.max_body_bytes, settings.header_timeout, settings.max_headers) == (4096, 2.5, 10)
    assert settings.keep_alive is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("header_timeout", "61s"),
        ("header_timeout", "0"),
        ("body_timeout", "2m"),
        ("max_headers", "101"),
        ("max_headers", "0"),
        ("max_header_bytes", "4096"),
        ("max_body_bytes", "0"),
        ("max_concurrency", "-1"),
        ("http_server", "credward"),
    ],
)
def test_out_of_range_limits_are_refused_by_name(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match="--" + key.replace("_", "-")):
        load_settings({**REQUIRED, key: value}, {})

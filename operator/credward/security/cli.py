"""``credward security serve`` (the service) and ``credward security keygen`` (a signing key file).

Each setting is a flag or a ``CREDWARD_SECURITY_<KEY>`` environment variable;
see :mod:`credward.security.settings`.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from dataclasses import fields
from pathlib import Path

from credward.domain.secrets import parse_hash_key
from credward.errors import CredwardError, HashKeyError
from credward.security.settings import (
    Settings,
    SettingsError,
    SigningAlgorithm,
    env_name,
    flag_name,
    load_settings,
)

log = logging.getLogger(__name__)

_HELP = {
    "issuer": "public base URL; the iss claim (e.g. https://credward-security.credward.svc:9000)",
    "store_url": "sqlite:///path/to/file.db or postgresql://user@host/db",
    "hash_key_file": "file with the HMAC key for secret hashes (shared with the operator)",
    "keys_dir": "directory of PEM signing keys: current.pem signs, every *.pem is published",
    "admin_auth": "tokenreview or bearer-file",
    "host": "listen address (default 127.0.0.1)",
    "port": "listen port (default 9000)",
    "dev_mode": "true: generate and persist a signing key and hash key if missing",
    "signing_alg": "ES256 (default), RS256 or EdDSA",
    "scope_profile": "wlcg (storage.read:/p) or scitokens (read:/p)",
    "max_token_ttl": "cap on token lifetime, e.g. 1h (default)",
    "admin_allow": "tokenreview: comma-separated system:serviceaccount:<ns>:<name> allowed to call the admin API",
    "kubeconfig": "tokenreview: kubeconfig to reach the API server (default: in-cluster credentials)",
    "admin_token_audiences": "tokenreview: audiences the admin token must carry",
    "admin_token_file": "bearer-file: file holding the admin bearer token",
    "account_cache_ttl": "seconds an account view is cached per replica (bounds revocation lag; default 2s)",
    "key_reload_interval": "how often to check the keys directory for changes (default 2s)",
    "throttle_client_failures": "failed authentications per client id per window before 429 (default 10)",
    "throttle_ip_failures": "failed authentications per client address per window before 429 (default 50)",
    "throttle_window": "failed-authentication window (default 60s)",
    "feed_max_wait": "longest long-poll wait of the revocation feed (default 30s)",
    "feed_subscriber_buffer": "revocation events queued per feed stream before a slow subscriber is dropped (64)",
    "usage_flush_interval": "how often recorded secret uses are written to the store, in one batch (default 5s)",
    "usage_window": "distinct callers of a secret are counted over this window (default 15m)",
    "introspect_allow": "client ids (resource servers) that may introspect any client's tokens (RFC 7662 §4)",
    "log_level": "DEBUG, INFO (default), WARNING",
    "http_server": "granian (default); uvicorn and hypercorn only for the benchmark (docs/http-server.md)",
    "header_timeout": "a request head must arrive within this; also the idle keep-alive timeout (default 10s, max 60s)",
    "body_timeout": "a request body must arrive within this, from its first read; else 408 (default 10s)",
    "keep_alive": "false: one request per connection (default true)",
    "max_header_bytes": "request line + headers, bytes; larger heads get 431 (default 16384, min 8192)",
    "max_headers": "header fields per request; more get 431 (default 64, max 100)",
    "max_body_bytes": "request body, bytes; larger get 413 before it is read (default 1048576)",
    "max_concurrency": "requests in the app at once, the revocation feed excepted; more get 503 (default 256)",
    "max_connections": "open connections; more wait in the listen backlog (default 10000)",
    "backlog": "listen backlog (default 1024)",
    "shutdown_timeout": "on SIGTERM, how long in-flight requests may finish (default 10s)",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("security", help="the security service")
    sub = parser.add_subparsers(dest="security_command", required=True)
    serve = sub.add_parser("serve", help="run the security service (one worker process)")
    for f in fields(Settings):
        serve.add_argument(flag_name(f.name), dest=f.name, default=None, help=f"{_HELP[f.name]} [{env_name(f.name)}]")
    serve.set_defaults(func=serve_command)
    keygen = sub.add_parser("keygen", help="write a new private signing key (PKCS#8 PEM, mode 0600)")
    keygen.add_argument("path", type=Path)
    keygen.add_argument("--alg", choices=[a.value for a in SigningAlgorithm], default="ES256")
    keygen.set_defaults(func=keygen_command)


def keygen_command(args: argparse.Namespace) -> int:
    from credward.security.keys import generate_key, key_to_pem

    path: Path = args.path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_to_pem(generate_key(SigningAlgorithm(args.alg))))
    return 0


def read_hash_key(path: Path, dev_mode: bool) -> bytes:
    """The HMAC key; dev mode creates one on first start."""
    if dev_mode and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    try:
        return parse_hash_key(path.read_bytes())
    except OSError as exc:
        raise SettingsError(f"cannot read the hash key file {path.name}: {exc.strerror}") from None
    except HashKeyError as exc:
        raise SettingsError(f"{path.name}: {exc}") from None


# Libraries that log query parameters at DEBUG; a parameter can be client input (a pasted secret).
_QUIET_AT_DEBUG = ("aiosqlite", "asyncpg", "httpcore", "httpx", "hpack")


def configure_logging(level: str) -> None:
    """Audit lines (JSON) go to stdout, everything else to stderr; libraries never log at DEBUG."""
    root = logging.getLogger()
    root.setLevel(level)
    for name in _QUIET_AT_DEBUG:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(err)
    audit = logging.getLogger("credward.audit")
    audit.propagate = False
    audit.setLevel(logging.INFO)
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    audit.addHandler(out)


def serve_command(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in fields(Settings)}
    try:
        settings = load_settings(flags, os.environ)
        configure_logging(settings.log_level)
        serve(settings)
    except (CredwardError, ValueError, OSError) as exc:  # configuration, key, store-URL and file problems
        print(f"credward security serve: {exc}", file=sys.stderr)
        return 2
    return 0


def serve(settings: Settings) -> None:
    """One process on uvloop, served by granian (``--http-server`` exists for the benchmark; docs/http-server.md)."""
    import uvloop

    uvloop.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    import inspect

    from credward.security import servers
    from credward.security.adminauth import build_authenticator
    from credward.security.app import create_app
    from credward.security.store import open_store

    hash_key = read_hash_key(settings.hash_key_file, settings.dev_mode)
    opened = open_store(settings.store_url)
    store = await opened if inspect.isawaitable(opened) else opened
    app = create_app(settings, store, build_authenticator(settings, dict(os.environ)), hash_key)
    log.info(
        "credward security service on %s:%d (%s), issuer %s",
        settings.host,
        settings.port,
        settings.http_server.value,
        settings.issuer,
    )
    await servers.run(app, settings)

"""Who may call the admin API: Kubernetes TokenReview against an allow-list, or one bearer token from a file.

In a cluster the operator sends its ServiceAccount token; the service asks the
API server (TokenReview) who that is and admits only usernames on the
allow-list (``system:serviceaccount:<namespace>:<name>``). Outside a cluster a
shared bearer token read from a file does. No or unknown credentials -> 401,
a valid identity that is not allowed -> 403. Reviews are cached for a few
seconds by token hash so a burst of admin calls costs one API round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from credward.errors import Forbidden, Unauthenticated
from credward.errors import KubeConfigError as KubeConfigError  # where callers have always imported it from
from credward.security.settings import AdminAuthMode, Settings

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_REVIEW_TTL = 10.0
_MAX_CACHED = 1000


class AdminAuthenticator(Protocol):
    async def authenticate(self, authorization: str | None) -> str:
        """Return the caller's identity or raise Unauthenticated / Forbidden."""

    async def close(self) -> None: ...


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("bearer credentials are required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("bearer credentials are required")
    return token.strip()


class BearerFileAuthenticator:
    """Compares the presented bearer token with the file's content (re-read when the file changes)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._expected = b""
        self._reload()

    def _reload(self) -> None:
        st = self._path.stat()
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            self._expected = self._path.read_bytes().strip()
            self._stamp = stamp
            if not self._expected:
                raise KubeConfigError(f"admin token file {self._path.name} is empty")

    async def authenticate(self, authorization: str | None) -> str:
        token = bearer_token(authorization)
        self._reload()
        if not hmac.compare_digest(token.encode(), self._expected):
            raise Unauthenticated("invalid bearer token")
        return "bearer-file"

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class ClusterAccess:
    """Where the API server is and how to prove who we are to it."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: Callable[[], str | None]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def load_kubeconfig(path: Path) -> ClusterAccess:
    """The current context of a kubeconfig: server, CA, client certificate or token."""
    try:
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc.get("users", []) if u["name"] == ctx["user"])
    except (OSError, KeyError, TypeError, StopIteration, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot use kubeconfig {path.name}: {type(exc).__name__}") from None
    base = path.parent

    def data(key: str, obj: dict[str, Any]) -> bytes | None:
        if obj.get(f"{key}-data"):
            return _b64(str(obj[f"{key}-data"]))
        if obj.get(key):
            return (base / str(obj[key])).read_bytes()
        return None

    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca = data("certificate-authority", cluster)
        context = ssl.create_default_context(cadata=ca.decode() if ca else None)
    cert, key = data("client-certificate", user), data("client-key", user)
    if cert and key:
        _load_cert_chain(context, cert, key)
    static_token = user.get("token")
    token_file: Path | None = base / str(user["tokenFile"]) if user.get("tokenFile") else None

    def token() -> str | None:
        if token_file is not None:
            return token_file.read_text().strip()
        return str(static_token) if static_token else None

    return ClusterAccess(str(cluster["server"]).rstrip("/"), context, token)


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl only loads client certificates from files: write them to a private temp dir, load, delete."""
    with tempfile.TemporaryDirectory(prefix="credward-kube-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        for p, content in ((cert_path, cert), (key_path, key)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        context.load_cert_chain(cert_path, key_path)


def in_cluster(env: dict[str, str]) -> ClusterAccess:
    """The pod's own ServiceAccount: projected token (re-read, it rotates) and the cluster CA."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeConfigError("not in a cluster (KUBERNETES_SERVICE_HOST unset) and no --kubeconfig given")
    context = ssl.create_default_context(cafile=str(IN_CLUSTER_DIR / "ca.crt"))
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return ClusterAccess(server, context, lambda: (IN_CLUSTER_DIR / "token").read_text().strip())


class TokenReviewAuthenticator:
    """Asks the API server who a bearer token belongs to and checks the allow-list."""

    def __init__(self, access: ClusterAccess, allow: tuple[str, ...], audiences: tuple[str, ...] = ()) -> None:
        self._access = access
        self._allow = frozenset(allow)
        self._audiences = audiences
        self._client = httpx.AsyncClient(base_url=access.server, verify=access.ssl_context, timeout=10.0)
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def _review(self, token: str) -> str | None:
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = list(self._audiences)
        headers = {}
        own = self._access.token()
        if own:
            headers["Authorization"] = f"Bearer {own}"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        try:
            response = await self._client.post(
                "/apis/authentication.k8s.io/v1/tokenreviews", json=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise Unauthenticated(f"token review unavailable ({type(exc).__name__})") from None
        if response.status_code != 201 and response.status_code != 200:
            raise Unauthenticated(f"token review failed with HTTP {response.status_code}")
        status = response.json().get("status", {})
        if not status.get("authenticated"):
            return None
        username = status.get("user", {}).get("username")
        return str(username) if username else None

    async def authenticate(self, authorization: str | None) -> str:
        token = bearer_token(authorization)
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            username = cached[1]
        else:
            username = await self._review(token)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (now + _REVIEW_TTL, username)
        if username is None:
            raise Unauthenticated("the token was not accepted by the Kubernetes API server")
        if username not in self._allow:
            raise Forbidden(f"{username} may not use the admin API")
        return username

    async def close(self) -> None:
        await self._client.aclose()


def build_authenticator(settings: Settings, env: dict[str, str]) -> AdminAuthenticator:
    if settings.admin_auth is AdminAuthMode.BEARER_FILE:
        assert settings.admin_token_file is not None  # enforced by load_settings
        return BearerFileAuthenticator(settings.admin_token_file)
    access = load_kubeconfig(settings.kubeconfig) if settings.kubeconfig else in_cluster(env)
    return TokenReviewAuthenticator(access, settings.admin_allow, settings.admin_token_audiences)

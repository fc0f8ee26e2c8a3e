"""Signing keys: loaded from a directory, reloaded when its files change, published as a JWKS.

Layout (a mounted Kubernetes Secret fits it): ``current.pem`` signs; every
other ``*.pem`` (by convention ``next.pem`` and ``previous.pem``) is only
published, so validators already trust the next key before it signs and still
trust the previous one while its tokens live. Files are PKCS#8 PEM private
keys: EC P-256 (ES256), RSA >= 2048 bits (RS256) or Ed25519 (EdDSA).

Signing is done with ``cryptography`` directly; the JWT header segment of the
current key is encoded once per key, not once per token. ES256 signatures are
converted from DER to JOSE's raw ``r || s`` with ``decode_dss_signature``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# Key material lives in the domain, shared with the operator that rotates the keys; imported from here as always.
from credward.domain.jwk import PrivateKey as PrivateKey
from credward.domain.jwk import SigningAlgorithm as SigningAlgorithm
from credward.domain.jwk import algorithm_of as algorithm_of
from credward.domain.jwk import b64url as b64url
from credward.domain.jwk import generate_key as generate_key
from credward.domain.jwk import key_to_pem as key_to_pem
from credward.domain.jwk import load_private_key
from credward.domain.jwk import public_jwk as public_jwk
from credward.domain.jwk import thumbprint as thumbprint
from credward.errors import KeyLoadError as KeyLoadError  # where callers have always imported it from

log = logging.getLogger(__name__)

CURRENT_KEY_FILE = "current.pem"


def _signer_function(key: PrivateKey) -> Callable[[bytes], bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def sign_es256(data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return sign_es256
    if isinstance(key, rsa.RSAPrivateKey):
        pad, sha = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: key.sign(data, pad, sha)
    return key.sign


class Signer:
    """Signs claim sets as compact JWS with one key; the header segment is precomputed."""

    def __init__(self, key: PrivateKey) -> None:
        jwk = public_jwk(key)
        self.kid: str = jwk["kid"]
        self.alg = algorithm_of(key)
        header = {"alg": self.alg.value, "typ": "at+jwt", "kid": self.kid}
        self._header_segment = b64url(json.dumps(header, separators=(",", ":")).encode()) + b"."
        self._sign = _signer_function(key)

    def sign(self, claims: dict[str, Any]) -> str:
        return self.sign_payload(json.dumps(claims, separators=(",", ":")).encode()).decode("ascii")

    def sign_payload(self, payload: bytes) -> bytes:
        """Compact JWS of an already serialized claim set."""
        signing_input = self._header_segment + b64url(payload)
        return signing_input + b"." + b64url(self._sign(signing_input))


@dataclass(frozen=True)
class KeySet:
    """One consistent snapshot: the signer and every published public key."""

    signer: Signer
    jwks: dict[str, Any]
    public_keys: dict[str, tuple[SigningAlgorithm, Any]]  # kid -> (alg, public key object)
    fingerprint: tuple[tuple[str, int, int, int], ...]


def _load_pem(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot load private key {path.name}: {type(exc).__name__}") from None
    return load_private_key(data, path.name)


def _fingerprint(keys_dir: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Cheap change detector: name, mtime, size and inode of each ``*.pem`` (symlinks followed)."""
    out = []
    for path in sorted(keys_dir.glob("*.pem")):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def ensure_dev_key(keys_dir: Path, alg: SigningAlgorithm) -> None:
    """Dev mode: generate ``current.pem`` on first start and keep it across restarts."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    target = keys_dir / CURRENT_KEY_FILE
    if target.exists():
        return
    tmp = keys_dir / f".{CURRENT_KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_to_pem(generate_key(alg)))
    tmp.replace(target)
    log.info("dev mode: generated a new %s signing key in %s", alg.value, CURRENT_KEY_FILE)


def load_keyset(keys_dir: Path, alg: SigningAlgorithm) -> KeySet:
    """Load every ``*.pem``; ``current.pem`` must exist and match the configured algorithm.

    A set read while the directory changed (a kubelet swapping ``..data`` between two reads: the old
    ``current.pem`` with the new ``previous.pem``) is read again, so it is never a mix of two versions.
    """
    for _ in range(4):
        keyset = _load_keyset(keys_dir, alg)
        if _fingerprint(keys_dir) == keyset.fingerprint:
            break
    return keyset  # still changing after four reads: the fingerprint differs, so the next check reloads


def _load_keyset(keys_dir: Path, alg: SigningAlgorithm) -> KeySet:
    fingerprint = _fingerprint(keys_dir)
    current_path = keys_dir / CURRENT_KEY_FILE
    if not current_path.exists():
        raise KeyLoadError(f"no {CURRENT_KEY_FILE} in the keys directory (start with --dev-mode to generate one)")
    current = _load_pem(current_path)
    if algorithm_of(current) is not alg:
        raise KeyLoadError(f"{CURRENT_KEY_FILE} is a {algorithm_of(current).value} key but {alg.value} is configured")
    keys = [current]
    for path in sorted(keys_dir.glob("*.pem")):
        if path.name != CURRENT_KEY_FILE:
            keys.append(_load_pem(path))
    jwks_keys: dict[str, dict[str, Any]] = {}
    public: dict[str, tuple[SigningAlgorithm, Any]] = {}
    for key in keys:
        jwk = public_jwk(key)
        jwks_keys.setdefault(jwk["kid"], jwk)
        public.setdefault(jwk["kid"], (algorithm_of(key), key.public_key()))
    return KeySet(Signer(current), {"keys": list(jwks_keys.values())}, public, fingerprint)


class KeyRing:
    """Holds the current :class:`KeySet`; :meth:`reload_if_changed` swaps it atomically."""

    def __init__(self, keys_dir: Path, alg: SigningAlgorithm, dev_mode: bool) -> None:
        self.keys_dir = keys_dir
        self.alg = alg
        if dev_mode:
            ensure_dev_key(keys_dir, alg)
        self.keyset = load_keyset(keys_dir, alg)

    def reload_if_changed(self) -> bool:
        """Reload when a key file changed; a broken new set is logged and the old one kept."""
        if _fingerprint(self.keys_dir) == self.keyset.fingerprint:
            return False
        try:
            new = load_keyset(self.keys_dir, self.alg)
        except KeyLoadError as exc:
            log.error("keeping the previous signing keys: %s", exc)
            return False
        old_kid = self.keyset.signer.kid
        self.keyset = new
        log.info(
            "signing keys reloaded: current kid %s (was %s), %d published",
            new.signer.kid,
            old_kid,
            len(new.jwks["keys"]),
        )
        return True

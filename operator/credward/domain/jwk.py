"""Signing-key material shared by the security service (which signs) and the operator (which rotates).

Keys are PKCS#8 PEM private keys: EC P-256 (ES256), RSA >= 2048 bits (RS256)
or Ed25519 (EdDSA). A key's ``kid`` is its RFC 7638 thumbprint, so the
operator names a key exactly as the service's JWKS does without talking to it.
All cryptography is the ``cryptography`` package's; the JWK members come from PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import json
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from credward.errors import KeyLoadError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class SigningAlgorithm(StrEnum):
    ES256 = "ES256"
    RS256 = "RS256"
    EDDSA = "EdDSA"


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def algorithm_of(key: PrivateKey) -> SigningAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyLoadError(f"EC keys must use P-256 for ES256, not {key.curve.name}")
        return SigningAlgorithm.ES256
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise KeyLoadError("RSA keys must have at least 2048 bits")
        return SigningAlgorithm.RS256
    return SigningAlgorithm.EDDSA


def generate_key(alg: SigningAlgorithm) -> PrivateKey:
    if alg is SigningAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg is SigningAlgorithm.RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(data: bytes, name: str) -> PrivateKey:
    """A supported private key from PEM bytes; the error names ``name`` and the problem, never the bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError(f"cannot load private key {name}: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyLoadError(f"{name}: unsupported key type {type(key).__name__}")
    algorithm_of(key)
    return key


_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256 of the required members, sorted, no whitespace)."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest()).decode()


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public JWK with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    alg = algorithm_of(key)
    jwk: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))
    elif isinstance(key, rsa.RSAPrivateKey):
        jwk = dict(RSAAlgorithm.to_jwk(key.public_key(), as_dict=True))
    else:
        jwk = dict(OKPAlgorithm.to_jwk(key.public_key(), as_dict=True))
    jwk.pop("key_ops", None)
    jwk.update(kid=thumbprint(jwk), alg=alg.value, use="sig")
    return jwk


def kid_of(key: PrivateKey) -> str:
    kid: str = public_jwk(key)["kid"]
    return kid

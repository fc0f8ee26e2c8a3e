"""Key loading, JWKS and signing (checked by PyJWT); the claims template; settings errors; kubeconfig loading."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
import yaml

from credward.domain.claims import ClaimsTemplate, build_claims
from credward.domain.scopes import Scope, ScopeProfile
from credward.domain.secrets import parse_hash_key
from credward.errors import HashKeyError
from credward.security.adminauth import load_kubeconfig
from credward.security.cli import read_hash_key
from credward.security.keys import (
    KeyLoadError,
    KeyRing,
    Signer,
    generate_key,
    key_to_pem,
    load_keyset,
    public_jwk,
    thumbprint,
)
from credward.security.service import TokenIds
from credward.security.settings import AdminAuthMode, SettingsError, SigningAlgorithm, load_settings

pytestmark = pytest.mark.unit

CLAIMS = {"iss": "https://i", "sub": "s", "aud": "a", "exp": 2_000_000_000, "iat": 1, "jti": "j"}


@pytest.mark.parametrize("alg", list(SigningAlgorithm))
def test_signer_output_verifies_with_pyjwt(alg: SigningAlgorithm) -> None:
    key = generate_key(alg)
    signer = Signer(key)
    token = signer.sign(CLAIMS)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg.value, "typ": "at+jwt", "kid": signer.kid}
    jwk = jwt.PyJWK(public_jwk(key))
    assert jwt.decode(token, jwk.key, algorithms=[alg.value], audience="a") == CLAIMS


def test_kid_is_the_rfc7638_thumbprint() -> None:
    """RFC 7638 §3.1's example RSA key has thumbprint NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajr"
        "n1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    assert (
        thumbprint({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256"}) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    )


def test_keyring_dev_mode_and_reload(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys", SigningAlgorithm.ES256, dev_mode=True)
    first = ring.keyset.signer.kid
    assert (tmp_path / "keys" / "current.pem").stat().st_mode & 0o777 == 0o600
    assert not ring.reload_if_changed()
    (tmp_path / "keys" / "next.pem").write_bytes(key_to_pem(generate_key(SigningAlgorithm.ES256)))
    assert ring.reload_if_changed()
    assert ring.keyset.signer.kid == first
    assert len(ring.keyset.jwks["keys"]) == 2
    (tmp_path / "keys" / "bad.pem").write_text("junk")
    assert not ring.reload_if_changed()
    assert len(ring.keyset.jwks["keys"]) == 2


def test_keys_errors_name_the_file_not_the_key(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match=r"no current\.pem"):
        load_keyset(tmp_path, SigningAlgorithm.ES256)
    (tmp_path / "current.pem").write_bytes(key_to_pem(generate_key(SigningAlgorithm.EDDSA)))
    with pytest.raises(KeyLoadError, match="EdDSA key but ES256 is configured"):
        load_keyset(tmp_path, SigningAlgorithm.ES256)
    (tmp_path / "current.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyLoadError, match=r"cannot load private key current\.pem") as info:
        load_keyset(tmp_path, SigningAlgorithm.ES256)
    assert "nope" not in str(info.value)


def test_claims_template_renders_what_build_claims_builds() -> None:
    args = {
        "profile": ScopeProfile.WLCG,
        "issuer": "https://i",
        "subject": "c@clients.i",
        "client_id": "c",
        "audience": ["https://a", 'https://b"q'],
        "scopes": (Scope("storage.read", ("x", "y")),),
        "roles": ("r",),
        "groups": ("/g",),
    }
    template = ClaimsTemplate(build_claims(**args, now=0, lifetime=1, jti=""))  # type: ignore[arg-type]
    expected = build_claims(**args, now=1000, lifetime=300, jti="abc_-9")  # type: ignore[arg-type]
    assert json.loads(template.render(1000, 300, "abc_-9")) == expected.claims
    assert json.loads(b'{"expires_in":300' + template.response_tail) == {"expires_in": 300, "scope": expected.scope}


def test_token_ids_are_unique_and_url_safe() -> None:
    ids = TokenIds()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(j) == 22 and j.replace("-", "").replace("_", "").isalnum() for j in seen)


def test_settings_name_every_problem() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"port": "99999", "issuer": "ftp://x"}, {"CREDWARD_SECURITY_DEV_MODE": "maybe"})
    text = str(info.value)
    for name in ("--port", "--issuer", "CREDWARD_SECURITY_DEV_MODE", "--store-url", "--hash-key-file", "--keys-dir"):
        assert name in text


def test_settings_from_flags_and_env() -> None:
    env = {
        "CREDWARD_SECURITY_STORE_URL": "postgresql://u:pw@db/credward",
        "CREDWARD_SECURITY_ADMIN_ALLOW": "system:serviceaccount:credward:operator",
        "CREDWARD_SECURITY_MAX_TOKEN_TTL": "10m",
    }
    flags = {"issuer": "https://auth.example", "hash_key_file": "/k", "keys_dir": "/keys", "admin_auth": "tokenreview"}
    s = load_settings(flags, {**env, "CREDWARD_SECURITY_INTROSPECT_ALLOW": "rs-1, rs-2"})
    assert s.issuer == "https://auth.example"
    assert s.introspect_allow == ("rs-1", "rs-2")
    assert s.admin_auth is AdminAuthMode.TOKENREVIEW
    assert s.admin_allow == ("system:serviceaccount:credward:operator",)
    assert s.max_token_ttl == 600
    assert s.issuer_host == "auth.example"


@pytest.mark.parametrize(
    ("issuer", "why"),
    [
        ("https://auth.example/", "without the trailing slash"),
        ("https://auth.example/credward", "with a path is not supported"),
        ("https://auth.example/credward/", "with a path is not supported"),
    ],
)
def test_settings_refuse_an_issuer_tokens_could_not_carry_exactly(issuer: str, why: str) -> None:
    """A trailing slash was dropped (so iss differed from what validators were given); a path got 404s."""
    base = {"store_url": "sqlite:///x.db", "hash_key_file": "/k", "keys_dir": "/d", "admin_auth": "bearer-file"}
    with pytest.raises(SettingsError, match=why):
        load_settings({**base, "issuer": issuer, "admin_token_file": "/t"}, {})


def test_hash_key_file_is_parsed_once_for_operator_and_service(tmp_path: Path) -> None:
    path = tmp_path / "hash.key"
    path.write_bytes(b"  " + b"a" * 32 + b"\n")
    assert read_hash_key(path, dev_mode=False) == parse_hash_key(path.read_bytes()) == b"a" * 32
    path.write_bytes(b"a" * 31 + b"\n")
    with pytest.raises(SettingsError, match="at least 32 bytes, not 31"):
        read_hash_key(path, dev_mode=False)
    with pytest.raises(HashKeyError, match="empty"):
        parse_hash_key(b" \n\t")
    created = tmp_path / "dev" / "hash.key"
    assert len(read_hash_key(created, dev_mode=True)) >= 32
    assert created.stat().st_mode & 0o777 == 0o600


def test_settings_never_echo_a_store_password() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"store_url": "mysql://u:hunter2@db/x"}, {})
    assert "hunter2" not in str(info.value)


def test_settings_mode_specific_keys() -> None:
    base = {"issuer": "https://i", "store_url": "sqlite:///x.db", "hash_key_file": "/k", "keys_dir": "/d"}
    with pytest.raises(SettingsError, match="admin-token-file"):
        load_settings({**base, "admin_auth": "bearer-file"}, {})
    with pytest.raises(SettingsError, match="admin-allow"):
        load_settings({**base, "admin_auth": "tokenreview"}, {})
    with pytest.raises(SettingsError, match="not system:serviceaccount"):
        load_settings({**base, "admin_auth": "tokenreview", "admin_allow": "alice"}, {})


def test_kubeconfig_with_embedded_data_and_token(tmp_path: Path) -> None:
    key = generate_key(SigningAlgorithm.ES256)
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(cert_pem)}}
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_to_pem(key)),
                    "token": "t0k",
                },
            }
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    access = load_kubeconfig(path)
    assert access.server == "https://127.0.0.1:6443"
    assert access.token() == "t0k"
    path.write_text("current-context: missing\n")
    with pytest.raises(Exception, match="cannot use kubeconfig"):
        load_kubeconfig(path)

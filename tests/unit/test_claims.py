"""Claim building, and the tokens of both profiles checked by the profiles' own reference validators.

The reference validators run unmodified and offline: the token is signed the way the service signs
it (:class:`credward.security.keys.Signer`, bytes from :class:`ClaimsTemplate`), and each validator is
handed the public key through its own API:

* SciTokens 2.0: the ``scitokens`` package (``SciToken.deserialize(public_key=...)`` and ``Enforcer``);
* WLCG 1.0 and SciTokens 2.0: scitokens-cpp (``libSciTokens``, the C library behind XRootD's and
  HTCondor's token support), called through its public C API with ``scitoken_store_public_ec_key``.
"""

from __future__ import annotations

import configparser
import ctypes
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import scitokens
import scitokens.utils.config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credward.domain.claims import (
    ANY_AUDIENCE,
    CLOCK_SKEW_ALLOWANCE,
    ClaimsTemplate,
    TokenGrant,
    build_claims,
    choose_audience,
    identity_for,
    token_lifetime,
)
from credward.domain.scopes import Scope, ScopeProfile, render_permissions
from credward.errors import InvalidClient, InvalidTarget
from credward.security.keys import Signer

pytestmark = pytest.mark.unit

WLCG, SCI = ScopeProfile.WLCG, ScopeProfile.SCITOKENS
ISSUER = "https://credward.example.org"
AUDIENCE = "https://store.example.org"
PERMISSIONS = [(("read",), ("store", "artifacts", "*")), (("read", "write"), ("store", "builds"))]


def test_identity() -> None:
    assert identity_for("abc", "auth.example.org") == "abc@clients.auth.example.org"


def test_choose_audience() -> None:
    allowed = ("https://a", "https://b")
    assert choose_audience(WLCG, allowed, ()) == ["https://a", "https://b"]
    assert choose_audience(WLCG, ("https://a",), ()) == "https://a"
    assert choose_audience(WLCG, allowed, ("https://b", "https://b")) == "https://b"
    assert choose_audience(SCI, (), ()) == ANY_AUDIENCE[SCI] == "ANY"
    assert choose_audience(WLCG, (), ()) == ANY_AUDIENCE[WLCG] == "https://wlcg.cern.ch/jwt/v1/any"
    with pytest.raises(InvalidTarget):
        choose_audience(WLCG, allowed, ("https://c",))
    with pytest.raises(InvalidTarget):
        choose_audience(WLCG, (), ("https://c",))


def test_lifetime_caps() -> None:
    assert token_lifetime(1000, 300, 3600, None) == 300
    assert token_lifetime(1000, 7200, 3600, None) == 3600
    assert token_lifetime(1000, 300, 3600, 1100) == 100
    with pytest.raises(InvalidClient):
        token_lifetime(1000, 300, 3600, 1000)


def grant(
    profile: ScopeProfile,
    *,
    now: int = 1_000_000,
    scopes: tuple[Scope, ...] | None = None,
    audience: str | list[str] = AUDIENCE,
) -> TokenGrant:
    return build_claims(
        profile=profile,
        issuer=ISSUER,
        subject="id@clients.credward.example.org",
        client_id="id",
        audience=audience,
        scopes=render_permissions(profile, PERMISSIONS) if scopes is None else scopes,
        roles=("builder",),
        groups=("/ci/builders", "/ci"),
        now=now,
        lifetime=300,
        jti="j",
    )


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_claims(profile: ScopeProfile) -> None:
    g = grant(profile)
    c = g.claims
    assert (c["iat"], c["nbf"], c["exp"]) == (1_000_000 - CLOCK_SKEW_ALLOWANCE,) * 2 + (1_000_300,)
    assert g.expires_in == 300
    wanted = {
        WLCG: "storage.read:/store/artifacts storage.read:/store/builds storage.modify:/store/builds",
        SCI: "read:/store/artifacts read:/store/builds write:/store/builds",
    }
    assert c["scope"] == g.scope == wanted[profile]
    assert c["wlcg.groups"] == ["/ci/builders", "/ci"]
    assert c["roles"] == ["builder"]
    # Each token claims one profile.
    assert c.get("wlcg.ver") == ("1.0" if profile is WLCG else None)
    assert c.get("ver") == ("scitoken:2.0" if profile is SCI else None)


def test_the_clock_allowance_is_small() -> None:
    assert 0 < CLOCK_SKEW_ALLOWANCE <= 120


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_an_account_without_permissions_gets_no_scope_member(profile: ScopeProfile) -> None:
    g = grant(profile, scopes=())
    assert "scope" not in g.claims
    assert g.scope == ""
    template = ClaimsTemplate(g)
    assert "scope" not in json.loads(template.render(5000, 300, "j"))
    response = json.loads(b'{"access_token":"t","token_type":"Bearer","expires_in":300' + template.response_tail)
    assert "scope" not in response


@pytest.mark.parametrize("profile", list(ScopeProfile))
@pytest.mark.parametrize("with_scope", [True, False])
def test_template_renders_what_build_claims_builds(profile: ScopeProfile, with_scope: bool) -> None:
    template = ClaimsTemplate(grant(profile, now=0, scopes=None if with_scope else ()))
    fresh = grant(profile, now=1_700_000_000, scopes=None if with_scope else ())
    assert json.loads(template.render(1_700_000_000, 300, "j")) == fresh.claims
    tail = json.loads(b'{"expires_in":300' + template.response_tail)
    assert tail == ({"expires_in": 300, "scope": fresh.scope} if with_scope else {"expires_in": 300})


# --- reference validators ------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    token: str
    public_pem: bytes
    kid: str


@pytest.fixture(scope="module")
def signer_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    key: ec.EllipticCurvePrivateKey,
    profile: ScopeProfile,
    *,
    now: int | None = None,
    scopes: tuple[Scope, ...] | None = None,
    audience: str | list[str] = AUDIENCE,
) -> Issued:
    """A token exactly as the service mints it: the template's bytes, signed by the service's Signer."""
    now = int(time.time()) if now is None else now
    template = ClaimsTemplate(grant(profile, now=0, scopes=scopes, audience=audience))
    signer = Signer(key)
    token = signer.sign_payload(template.render(now, 300, "jti-1")).decode()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Issued(token, pem, signer.kid)


def reissue_without_allowance(issued: Issued, key: ec.EllipticCurvePrivateKey, now: int) -> str:
    """The same claims with ``iat == nbf == now``: what credward issued before the allowance."""
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    claims.update(iat=now, nbf=now)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": issued.kid, "typ": "at+jwt"})


# scitokens (Python) -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def scitokens_cache(tmp_path: Path) -> Iterator[None]:
    """The package's key cache (a SQLite file it creates even when handed the key) in this test's directory."""
    with scitokens_cache_in(tmp_path):
        yield


@contextmanager
def scitokens_cache_in(directory: Path) -> Iterator[None]:
    """Point the scitokens package's cache at ``directory`` through its public ``set_config``, then back."""
    config = configparser.ConfigParser(scitokens.utils.config.CONFIG_DEFAULTS)
    config.add_section("scitokens")
    config.set("scitokens", "cache_location", str(directory))
    scitokens.set_config(config)
    try:
        yield
    finally:
        defaults = configparser.ConfigParser(scitokens.utils.config.CONFIG_DEFAULTS)
        defaults.add_section("scitokens")
        scitokens.set_config(defaults)


def python_enforce(issued: Issued | str, pem: bytes, authz: str, path: str, audience: str = AUDIENCE) -> bool:
    token = issued.token if isinstance(issued, Issued) else issued
    parsed = scitokens.SciToken.deserialize(token, public_key=pem)
    enforcer = scitokens.Enforcer(ISSUER, audience=audience)
    allowed: bool = enforcer.test(parsed, authz, path)
    return allowed


def test_scitokens_python_accepts_and_enforces_the_prefix_rule(signer_key: ec.EllipticCurvePrivateKey) -> None:
    issued = issue(signer_key, SCI)
    pem = issued.public_pem
    assert python_enforce(issued, pem, "read", "/store/artifacts")
    assert python_enforce(issued, pem, "read", "/store/artifacts/run-7/log.txt")
    assert python_enforce(issued, pem, "write", "/store/builds/42")
    assert not python_enforce(issued, pem, "write", "/store/artifacts/x")
    assert not python_enforce(issued, pem, "read", "/store/artifacts-old")
    assert not python_enforce(issued, pem, "read", "/store")
    enforcer = scitokens.Enforcer(ISSUER, audience=AUDIENCE)
    acls = enforcer.generate_acls(scitokens.SciToken.deserialize(issued.token, public_key=pem))
    assert sorted(acls) == [("read", "/store/artifacts"), ("read", "/store/builds"), ("write", "/store/builds")]


def test_scitokens_python_checks_the_audience(signer_key: ec.EllipticCurvePrivateKey) -> None:
    issued = issue(signer_key, SCI)
    assert not python_enforce(issued, issued.public_pem, "read", "/store/artifacts", audience="https://elsewhere")
    anywhere = issue(signer_key, SCI, audience=ANY_AUDIENCE[SCI])
    assert python_enforce(anywhere, anywhere.public_pem, "read", "/store/artifacts", audience="https://elsewhere")


def test_scitokens_python_accepts_a_fresh_token_from_a_clock_a_second_ahead(
    signer_key: ec.EllipticCurvePrivateKey,
) -> None:
    ahead = int(time.time()) + 1  # the issuer's clock a second ahead = the validator's a second behind
    issued = issue(signer_key, SCI, now=ahead)
    assert python_enforce(issued, issued.public_pem, "read", "/store/artifacts/x")
    # Without the allowance the same token is refused: the test can fail.
    bare = reissue_without_allowance(issued, signer_key, ahead)
    with pytest.raises(jwt.ImmatureSignatureError):
        scitokens.SciToken.deserialize(bare, public_key=issued.public_pem)


def test_scitokens_python_refuses_a_token_without_scope(signer_key: ec.EllipticCurvePrivateKey) -> None:
    """SciTokens 2.0 makes scope REQUIRED: an account with no permissions may do nothing there."""
    issued = issue(signer_key, SCI, scopes=())
    parsed = scitokens.SciToken.deserialize(issued.token, public_key=issued.public_pem)
    enforcer = scitokens.Enforcer(ISSUER, audience=AUDIENCE)
    assert not enforcer.test(parsed, "read", "/")
    assert "scope" in (enforcer.last_failure or "")


# scitokens-cpp (C library, through its public API) -----------------------------------------------

COMPAT, SCITOKENS_2_0, WLCG_1_0 = 0, 2, 3  # SciTokenProfile in scitokens.h
_V = ctypes.c_void_p


class _Acl(ctypes.Structure):
    _fields_ = [("authz", ctypes.c_char_p), ("resource", ctypes.c_char_p)]


def load_scitokens_cpp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libSciTokens.so.0")
    err = ctypes.POINTER(_V)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "scitoken_store_public_ec_key": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, err], ctypes.c_int),
        "scitoken_create": ([_V], _V),
        "scitoken_destroy": ([_V], None),
        "scitoken_set_deserialize_profile": ([_V, ctypes.c_int], None),
        "scitoken_deserialize_v2": ([ctypes.c_char_p, _V, ctypes.POINTER(ctypes.c_char_p), err], ctypes.c_int),
        "enforcer_create": ([ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), err], _V),
        "enforcer_destroy": ([_V], None),
        "enforcer_set_validate_profile": ([_V, ctypes.c_int], None),
        "enforcer_test": ([_V, _V, ctypes.POINTER(_Acl), err], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def _message(err: ctypes.c_void_p) -> str:
    return (ctypes.cast(err, ctypes.c_char_p).value or b"").decode() if err.value else ""


class ScitokensCpp:
    """scitokens-cpp's validator and enforcer for one profile, with the issuer's key stored offline."""

    def __init__(self, lib: ctypes.CDLL, profile: int, issuer: str = ISSUER) -> None:
        self._lib, self._profile, self._issuer = lib, profile, issuer.encode()

    def trust(self, kid: str, public_pem: bytes) -> None:
        """Store the issuer's public key in the library's key cache (what it would fetch from the JWKS)."""
        err = _V()
        rc = self._lib.scitoken_store_public_ec_key(self._issuer, kid.encode(), public_pem, err)
        assert rc == 0, _message(err)

    def verify(self, token: str) -> tuple[bool, str]:
        """Deserialize (signature, time and profile checks); (accepted, error message)."""
        handle = self._deserialize(token)
        if isinstance(handle, str):
            return False, handle
        self._lib.scitoken_destroy(handle)
        return True, ""

    def allows(self, token: str, authz: str, path: str, audience: str = AUDIENCE) -> bool:
        handle = self._deserialize(token)
        assert not isinstance(handle, str), handle
        err = _V()
        audiences = (ctypes.c_char_p * 2)(audience.encode(), None)
        enforcer = self._lib.enforcer_create(self._issuer, audiences, err)
        assert enforcer, _message(err)
        try:
            self._lib.enforcer_set_validate_profile(enforcer, self._profile)
            acl = _Acl(authz.encode(), path.encode())
            return bool(self._lib.enforcer_test(enforcer, handle, ctypes.byref(acl), err) == 0)
        finally:
            self._lib.enforcer_destroy(enforcer)
            self._lib.scitoken_destroy(handle)

    def _deserialize(self, token: str) -> ctypes.c_void_p | str:
        handle = _V(self._lib.scitoken_create(None))
        self._lib.scitoken_set_deserialize_profile(handle, self._profile)
        err = _V()
        issuers = (ctypes.c_char_p * 2)(self._issuer, None)
        if self._lib.scitoken_deserialize_v2(token.encode(), handle, issuers, err) != 0:
            self._lib.scitoken_destroy(handle)
            return _message(err) or "refused"
        return handle


@pytest.fixture
def cpp_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ctypes.CDLL:
    """The library with its key cache (a SQLite file under $XDG_CACHE_HOME) in this test's directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    return load_scitokens_cpp()


ACTIONS = {WLCG: ("storage.read", "storage.modify"), SCI: ("read", "write")}
CPP_PROFILE = {WLCG: WLCG_1_0, SCI: SCITOKENS_2_0}


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_scitokens_cpp_accepts_and_enforces(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey, profile: ScopeProfile
) -> None:
    cpp = ScitokensCpp(cpp_lib, CPP_PROFILE[profile])
    issued = issue(signer_key, profile)
    cpp.trust(issued.kid, issued.public_pem)
    assert cpp.verify(issued.token) == (True, "")
    read, write = ACTIONS[profile]
    assert cpp.allows(issued.token, read, "/store/artifacts")
    assert cpp.allows(issued.token, read, "/store/artifacts/run-7/log.txt")
    assert cpp.allows(issued.token, write, "/store/builds/42")
    assert not cpp.allows(issued.token, write, "/store/artifacts/x")
    assert not cpp.allows(issued.token, read, "/store")
    assert not cpp.allows(issued.token, read, "/store/artifacts", audience="https://elsewhere")


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_scitokens_cpp_honours_the_any_audience(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey, profile: ScopeProfile
) -> None:
    cpp = ScitokensCpp(cpp_lib, CPP_PROFILE[profile])
    issued = issue(signer_key, profile, audience=ANY_AUDIENCE[profile])
    cpp.trust(issued.kid, issued.public_pem)
    assert cpp.allows(issued.token, ACTIONS[profile][0], "/store/artifacts/x", audience="https://elsewhere")


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_scitokens_cpp_accepts_a_fresh_token_from_a_clock_a_second_ahead(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey, profile: ScopeProfile
) -> None:
    cpp = ScitokensCpp(cpp_lib, CPP_PROFILE[profile])
    ahead = int(time.time()) + 1
    issued = issue(signer_key, profile, now=ahead)
    cpp.trust(issued.kid, issued.public_pem)
    assert cpp.verify(issued.token) == (True, "")
    accepted, message = cpp.verify(reissue_without_allowance(issued, signer_key, ahead))
    assert not accepted, "without the allowance a validator a second behind refuses the token"
    assert message


def test_scitokens_cpp_wlcg_token_without_scope_is_valid_and_allows_nothing(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey
) -> None:
    """WLCG makes scope optional: the token is valid (groups and roles still hold), it grants no path."""
    cpp = ScitokensCpp(cpp_lib, WLCG_1_0)
    issued = issue(signer_key, WLCG, scopes=())
    cpp.trust(issued.kid, issued.public_pem)
    assert cpp.verify(issued.token) == (True, "")
    assert not cpp.allows(issued.token, "storage.read", "/")


def test_scitokens_cpp_scitokens_token_without_scope_allows_nothing(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey
) -> None:
    """SciTokens 2.0 requires scope: refusing the token and accepting it for no path are both right."""
    cpp = ScitokensCpp(cpp_lib, SCITOKENS_2_0)
    issued = issue(signer_key, SCI, scopes=())
    cpp.trust(issued.kid, issued.public_pem)
    accepted, _ = cpp.verify(issued.token)
    assert not accepted or not cpp.allows(issued.token, "read", "/")


def test_scitokens_cpp_refuses_a_token_of_the_other_profile(
    cpp_lib: ctypes.CDLL, signer_key: ec.EllipticCurvePrivateKey
) -> None:
    """Each token claims one profile (one version claim), so a strict validator of the other refuses it."""
    wlcg, sci = issue(signer_key, WLCG), issue(signer_key, SCI)
    cpp = ScitokensCpp(cpp_lib, WLCG_1_0)
    cpp.trust(wlcg.kid, wlcg.public_pem)
    assert cpp.verify(wlcg.token)[0]
    assert not cpp.verify(sci.token)[0]
    assert not ScitokensCpp(cpp_lib, SCITOKENS_2_0).verify(wlcg.token)[0]

"""Claim building: audience choice (RFC 8707), lifetime caps, and the claim set."""

from __future__ import annotations

import pytest

from credward.domain.claims import ANY_AUDIENCE, build_claims, choose_audience, identity_for, token_lifetime
from credward.domain.scopes import Scope, ScopeProfile
from credward.errors import InvalidClient, InvalidTarget

pytestmark = pytest.mark.unit


def test_identity() -> None:
    assert identity_for("abc", "auth.example.org") == "abc@clients.auth.example.org"


def test_choose_audience() -> None:
    allowed = ("https://a", "https://b")
    assert choose_audience(ScopeProfile.WLCG, allowed, ()) == ["https://a", "https://b"]
    assert choose_audience(ScopeProfile.WLCG, ("https://a",), ()) == "https://a"
    assert choose_audience(ScopeProfile.WLCG, allowed, ("https://b", "https://b")) == "https://b"
    assert choose_audience(ScopeProfile.SCITOKENS, (), ()) == ANY_AUDIENCE[ScopeProfile.SCITOKENS]
    with pytest.raises(InvalidTarget):
        choose_audience(ScopeProfile.WLCG, allowed, ("https://c",))
    with pytest.raises(InvalidTarget):
        choose_audience(ScopeProfile.WLCG, (), ("https://c",))


def test_lifetime_caps() -> None:
    assert token_lifetime(1000, 300, 3600, None) == 300
    assert token_lifetime(1000, 7200, 3600, None) == 3600
    assert token_lifetime(1000, 300, 3600, 1100) == 100
    with pytest.raises(InvalidClient):
        token_lifetime(1000, 300, 3600, 1000)


@pytest.mark.parametrize("profile", list(ScopeProfile))
def test_claims(profile: ScopeProfile) -> None:
    grant = build_claims(
        profile=profile,
        issuer="https://iss",
        subject="id@clients.iss",
        client_id="id",
        audience="https://a",
        scopes=(Scope("read", ("x",)),),
        roles=("r",),
        groups=("/g/sub", "/g"),
        now=1000,
        lifetime=300,
        jti="j",
    )
    c = grant.claims
    assert (c["iat"], c["nbf"], c["exp"]) == (1000, 1000, 1300)
    assert c["scope"] == grant.scope == "read:/x"
    assert c["wlcg.groups"] == ["/g/sub", "/g"]
    assert c["wlcg.ver"] == "1.0"
    assert ("ver" in c) is (profile is ScopeProfile.SCITOKENS)
    assert grant.expires_in == 300

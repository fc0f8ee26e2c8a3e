"""Revocation through the real operator, service and feed: refused at the token endpoint, rejected by validators.

``spec.revoked: true`` and deleting the credential both revoke the account in the service (the deletion then
removes it, and the Secret is garbage-collected by kube-controller-manager through its owner reference); a
``credward.client`` validator following the feed rejects the account's live tokens. A validator that loses the
feed says so and refuses tokens once ``loss_grace`` has passed. The latency goals are measured in
``bench/revocation.py``; these tests wait on conditions with generous bounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from tests.integration.test_operator import binding, credential, decoded, ready, synced
from tests.support.kube import apply, condition, get, wait_for
from tests.support.service import SecurityServer

from credward.client import Check, InvalidToken, IssuerUnavailable, TokenValidator
from credward.devcluster import ControlPlane
from credward.devcluster.processes import ChildProcess

pytestmark = pytest.mark.integration

AUDIENCE = "https://storage.revocation.test"


@pytest.fixture
def validator(security: SecurityServer) -> Iterator[TokenValidator]:
    with TokenValidator(security.base_url, audience=AUDIENCE) as v:
        v.follow_revocations(wait=5)
        yield v


def token_of(security: SecurityServer, data: dict[str, str]) -> str:
    response = security.token(data["client-id"], data["client-secret"])
    assert response.status_code == 200
    value = response.json()["access_token"]
    assert isinstance(value, str)
    return value


def rejected(validator: TokenValidator, token: str) -> bool:
    try:
        validator.verify(token)
    except InvalidToken as exc:
        return exc.check == Check.REVOKED
    return False


def feed_names(security: SecurityServer, client_id: str) -> bool:
    response = httpx.get(f"{security.base_url}/v1/revocations", params={"since": 0}, timeout=10)
    response.raise_for_status()
    return any(e["kind"] == "account" and e["client_id"] == client_id for e in response.json()["events"])


def test_spec_revoked_refuses_new_tokens_and_the_validator_rejects_live_ones(
    control_plane: ControlPlane,
    operator: ChildProcess,
    security: SecurityServer,
    namespace: str,
    validator: TokenValidator,
) -> None:
    apply(control_plane, credential("leaver", audiences=[AUDIENCE]), namespace)
    ready(control_plane, namespace, "leaver")
    secret = get(control_plane, "secret", "leaver-credentials", namespace)
    assert secret is not None
    data = decoded(secret)
    live = token_of(security, data)
    assert validator.verify(live).client_id == data["client-id"]  # accepted (and cached) before the revocation
    assert not feed_names(security, data["client-id"])

    patch = json.dumps({"spec": {"revoked": True}})
    control_plane.kubectl("patch", "sac", "leaver", "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        lambda: security.token(data["client-id"], data["client-secret"]).status_code == 401,
        "the token endpoint to refuse the revoked account",
    )
    wait_for(lambda: rejected(validator, live), "the validator to reject the live token")
    assert feed_names(security, data["client-id"])
    obj = wait_for(
        lambda: (o := get(control_plane, "sac", "leaver", namespace)) and condition(o, "Revoked") and o,
        "status Revoked",
    )
    revoked = condition(obj, "Revoked")
    assert revoked is not None
    assert revoked["status"] == "True"


def test_deleting_a_credential_revokes_it_and_cleans_up_everything_it_owned(
    control_plane: ControlPlane,
    operator: ChildProcess,
    security: SecurityServer,
    namespace: str,
    validator: TokenValidator,
) -> None:
    apply(control_plane, credential("gone", audiences=[AUDIENCE]), namespace)
    apply(control_plane, binding("gone-roles", "gone", roles=["builder"]), namespace)
    ready(control_plane, namespace, "gone")
    wait_for(lambda: synced(control_plane, namespace, "gone-roles"), "the binding Synced")
    secret = get(control_plane, "secret", "gone-credentials", namespace)
    assert secret is not None
    data = decoded(secret)
    live = token_of(security, data)
    validator.verify(live)
    assert security.account(data["client-id"]) is not None

    control_plane.kubectl("delete", "sac", "gone", "-n", namespace, "--wait=true", "--timeout=60s")
    # The finalizer revoked, then removed, the account; kube-controller-manager's garbage collector the Secret.
    wait_for(lambda: security.account(data["client-id"]) is None, "the account to be removed from the service")
    assert security.token(data["client-id"], data["client-secret"]).status_code == 401
    wait_for(lambda: rejected(validator, live), "the validator to reject the deleted account's live token")
    assert feed_names(security, data["client-id"])
    wait_for(
        lambda: get(control_plane, "secret", "gone-credentials", namespace) is None,
        "the Secret to be garbage-collected",
        timeout=60,
    )
    # The RoleBinding is the user's, not the credential's: it stays and says what it waits for.
    wait_for(
        lambda: (
            (c := condition(get(control_plane, "rolebindings.credward.io", "gone-roles", namespace), "Synced"))
            and c["reason"] == "AccountNotFound"
        ),
        "the binding to wait for its account",
    )


def test_a_validator_that_loses_the_feed_says_so_and_refuses_until_it_is_back(
    control_plane: ControlPlane,
    operator: ChildProcess,
    security_up: SecurityServer,
    namespace: str,
) -> None:
    apply(control_plane, credential("blind", audiences=[AUDIENCE]), namespace)
    ready(control_plane, namespace, "blind")
    secret = get(control_plane, "secret", "blind-credentials", namespace)
    assert secret is not None
    live = token_of(security_up, decoded(secret))
    with (
        TokenValidator(security_up.base_url, audience=AUDIENCE) as strict,
        TokenValidator(security_up.base_url, audience=AUDIENCE) as lenient,
    ):
        strict.follow_revocations(wait=2, loss_grace=3)
        lenient.follow_revocations(wait=2, loss_grace=3, on_loss="accept")
        wait_for(lambda: strict.revocation_feed.lost_since is None, "the strict validator to reach the feed")
        wait_for(lambda: lenient.revocation_feed.lost_since is None, "the lenient validator to reach the feed")
        strict.verify(live)
        lenient.verify(live)
        assert not strict.revocation_feed.blind

        security_up.stop()
        wait_for(lambda: strict.revocation_feed.refusing, "the strict one to refuse")
        state = strict.revocation_feed
        assert state.blind
        assert state.lost_since is not None
        with pytest.raises(IssuerUnavailable, match="revocation feed"):
            strict.verify(live)  # even a token it verified (and cached) before
        assert wait_for(lambda: lenient.revocation_feed.blind, "the lenient one to say it is blind")
        assert not lenient.revocation_feed.refusing
        lenient.verify(live)  # honoured until exp, as without the feed

        security_up.start()
        wait_for(lambda: not strict.revocation_feed.blind, "the strict one to see the feed again", timeout=60)
        assert strict.verify(live).client_id == decoded(secret)["client-id"]

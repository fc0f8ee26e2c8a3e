"""No secret value, hash key, admin token or full access token appears in the service's logs or audit output.

The service runs at DEBUG and is driven through every path that sees a
secret: both client authentication methods, a wrong secret, id and secret
swapped, a secret pasted into other parameters, introspection, revocation and
the admin API. Failures name what leaked, never the value.
"""

from __future__ import annotations

import json

import pytest
from tests.integration.security.conftest import StartService

from credward.domain.secrets import new_client_secret

pytestmark = pytest.mark.integration


def test_no_secret_reaches_logs_or_audit(start_service: StartService) -> None:
    service = start_service(log_level="DEBUG")
    client = service.register()
    stray = new_client_secret()
    sensitive: dict[str, str] = {"client secret": client.secret, "wrong secret": stray}
    with service.http() as http:
        ok = service.token(client)
        sensitive["access token"] = ok.json()["access_token"]
        post = http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": client.secret},
        )
        sensitive["access token (post)"] = post.json()["access_token"]
        http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, stray))
        http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client.secret, client.client_id))
        http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": client.secret},
            auth=(client.client_id, client.secret),
        )
        http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "audience": client.secret},
            auth=(client.client_id, client.secret),
        )
        http.post("/oauth2/token", data={"grant_type": client.secret}, auth=(client.client_id, client.secret))
        http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, stray))
        http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, stray))
        http.post(
            "/oauth2/introspect", data={"token": sensitive["access token"]}, auth=(client.client_id, client.secret)
        )
        http.post("/oauth2/revoke", data={"token": sensitive["access token"]}, auth=(client.client_id, client.secret))
        http.put(f"/v1/admin/accounts/{client.client_id}", json={}, headers={"Authorization": f"Bearer {stray}"})
    assert ok.status_code == post.status_code == 200
    sensitive["admin token"] = service.admin_token
    sensitive["hash key"] = service.hash_key.decode()
    service.process.terminate()
    service.process.wait(timeout=10)

    logs = service.logs()
    leaked = sorted(name for name, value in sensitive.items() if value in logs)
    assert leaked == [], f"found in the service's output: {leaked}"
    signatures = [token.rsplit(".", 1)[1] for key, token in sensitive.items() if key.startswith("access token")]
    assert not any(sig in logs for sig in signatures), "a token signature appears in the service's output"

    records = [json.loads(line) for line in service.audit_lines()]
    outcomes = [(r["event"], r["outcome"]) for r in records]
    assert outcomes.count(("token", "issued")) == 2
    assert ("token", "denied") in outcomes
    assert ("revoke", "revoked") in outcomes
    swapped = [r for r in records if "client_id_fp" in r]
    assert swapped, "an unknown client id is logged as a fingerprint"

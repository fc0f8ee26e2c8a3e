"""The token endpoint over real HTTP, on SQLite and on a real PostgreSQL: grants, RFC 6749 errors, scopes, audiences."""

from __future__ import annotations

import base64
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from tests.integration.security.conftest import Registered, Service

from credward.domain.claims import CLOCK_SKEW_ALLOWANCE

pytestmark = pytest.mark.integration


def verify(service: Service, token: str, audience: str | list[str] | None = None) -> dict[str, Any]:
    """Unmodified PyJWT against the JWKS found through discovery, as a resource server would."""
    config = httpx.get(service.base_url + "/.well-known/openid-configuration").json()
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    options: jwt.types.Options = {} if audience is not None else {"verify_aud": False}
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], issuer=service.base_url, audience=audience, options=options
    )
    return claims


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text
    error: str = response.json()["error"]
    return error


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_gets_a_token_pyjwt_verifies(service: Service, method: str) -> None:
    client = service.register()
    with OAuth2Client(client.client_id, client.secret, token_endpoint_auth_method=method) as oauth:
        token = oauth.fetch_token(service.token_url, grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    claims = verify(service, token["access_token"], "https://storage.example")
    host = "127.0.0.1"
    assert claims["sub"] == f"{client.client_id}@clients.{host}"
    assert claims["client_id"] == client.client_id
    assert claims["scope"] == "storage.read:/data storage.modify:/data/out"
    assert claims["roles"] == ["reader"]
    assert claims["wlcg.ver"] == "1.0"
    assert claims["wlcg.groups"] == ["/atlas/prod", "/atlas"]
    assert claims["exp"] - claims["iat"] == 300 + CLOCK_SKEW_ALLOWANCE  # iat is backdated
    assert jwt.get_unverified_header(token["access_token"])["kid"]


def test_discovery_documents_agree(service: Service) -> None:
    oidc = httpx.get(service.base_url + "/.well-known/openid-configuration").json()
    rfc8414 = httpx.get(service.base_url + "/.well-known/oauth-authorization-server").json()
    assert oidc == rfc8414
    assert oidc["issuer"] == service.base_url
    assert oidc["token_endpoint"] == service.token_url
    assert oidc["grant_types_supported"] == ["client_credentials"]
    assert set(oidc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    keys = httpx.get(oidc["jwks_uri"]).json()["keys"]
    assert keys
    assert all(k["alg"] == "ES256" and k["use"] == "sig" and "d" not in k for k in keys)


def test_both_auth_methods_at_once(service: Service) -> None:
    client = service.register()
    response = service.token(client, client_secret=client.secret)
    assert error_of(response, 400) == "invalid_request"


@pytest.mark.parametrize("case", ["none", "unknown", "wrong-secret", "not-basic"])
def test_invalid_client_is_401_with_www_authenticate(service: Service, case: str) -> None:
    client = service.register()
    headers = {}
    if case == "unknown":
        headers["Authorization"] = "Basic " + base64.b64encode(b"nobody:cws_x").decode()
    elif case == "wrong-secret":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client.client_id}:cws_wrong".encode()).decode()
    elif case == "not-basic":
        headers["Authorization"] = "Digest abc"
    response = httpx.post(service.token_url, data={"grant_type": "client_credentials"}, headers=headers)
    assert error_of(response, 401) == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "storage.read:/elsewhere"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "storage.modify:/data"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "nonsense"}, "invalid_scope"),
        ({"grant_type": "client_credentials", "audience": "https://other.example"}, "invalid_target"),
        ({"grant_type": "client_credentials", "resource": "relative/path"}, "invalid_target"),
    ],
)
def test_rfc6749_errors(service: Service, form: dict[str, str], expected: str) -> None:
    client = service.register()
    with service.http() as http:
        response = http.post("/oauth2/token", data=form, auth=(client.client_id, client.secret))
    assert error_of(response, 400) == expected
    assert "access_token" not in response.text


def test_wrong_content_type_and_repeated_parameter(service: Service) -> None:
    client = service.register()
    with service.http() as http:
        as_json = http.post(
            "/oauth2/token", json={"grant_type": "client_credentials"}, auth=(client.client_id, client.secret)
        )
        repeated = http.post(
            "/oauth2/token",
            content=b"grant_type=client_credentials&grant_type=client_credentials",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(client.client_id, client.secret),
        )
        get = http.get("/oauth2/token")
    assert error_of(as_json, 400) == "invalid_request"
    assert error_of(repeated, 400) == "invalid_request"
    assert get.status_code == 405


def test_downscoping(service: Service) -> None:
    client = service.register()
    response = service.token(client, scope="storage.read:/data/run7")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "storage.read:/data/run7"
    assert verify(service, response.json()["access_token"])["scope"] == "storage.read:/data/run7"


def test_a_trailing_wildcard_grants_the_path_and_everything_below(service: Service) -> None:
    client = service.register(permissions=[{"verbs": ["read", "write"], "path": ["runs", "*"]}])
    assert service.token(client).json()["scope"] == "storage.read:/runs storage.modify:/runs"
    ok = service.token(client, scope="storage.modify:/runs/7/out/file")
    assert ok.status_code == 200, ok.text
    assert error_of(service.token(client, scope="storage.modify:/other"), 400) == "invalid_scope"


def test_a_wildcard_inside_a_path_is_refused_by_the_admin_api(service: Service) -> None:
    client = service.register()
    mappings = {"mappings": [{"name": "rb", "permissions": [{"verbs": ["read"], "path": ["runs", "*", "out"]}]}]}
    with service.http() as http:
        response = http.put(
            f"/v1/admin/accounts/{client.client_id}/role-mappings", json=mappings, headers=service.admin_headers()
        )
    assert response.status_code == 400
    assert "'*' may only be the last part of a path" in response.json()["error_description"]


def test_audience_and_resource(service: Service) -> None:
    client = service.register(audiences=("https://a.example", "https://b.example"))
    by_resource = service.token(client, resource="https://b.example")
    assert verify(service, by_resource.json()["access_token"], "https://b.example")["aud"] == "https://b.example"
    by_audience = service.token(client, audience="https://a.example")
    assert verify(service, by_audience.json()["access_token"], "https://a.example")["aud"] == "https://a.example"
    default = verify(service, service.token(client).json()["access_token"])
    assert default["aud"] == ["https://a.example", "https://b.example"]


def test_ttl_is_capped_by_the_server_maximum(service: Service) -> None:
    client = service.register(ttl=86400)
    assert service.token(client).json()["expires_in"] == 3600


def test_account_expiry(service: Service) -> None:
    client = service.register(expires_at=datetime.now(UTC) + timedelta(seconds=3))
    first = service.token(client)
    assert first.status_code == 200
    assert 1 <= first.json()["expires_in"] <= 3
    time.sleep(3.5)
    assert error_of(service.token(client), 401) == "invalid_client"


def test_secret_rotation_overlap_and_not_after(service: Service) -> None:
    """Two live secrets during rotation; the old one stops at its not-after."""
    client = service.register()
    from credward.domain.secrets import hash_secret, new_client_secret

    new_secret = new_client_secret()
    service.secrets_seen.append(new_secret)
    body = {
        "secrets": [
            {
                "id": "old",
                "hash": hash_secret(service.hash_key, client.secret),
                "notAfter": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
            },
            {"id": "new", "hash": hash_secret(service.hash_key, new_secret)},
        ],
        "audiences": ["https://storage.example"],
    }
    assert service.put_account(client.client_id, body).status_code == 200
    rotated = Registered(client.client_id, new_secret, "new")
    assert service.token(client).status_code == 200
    assert service.token(rotated).status_code == 200
    time.sleep(2.5)
    assert error_of(service.token(client), 401) == "invalid_client"
    assert service.token(rotated).status_code == 200


def test_throttling_returns_429_with_retry_after(service: Service) -> None:
    client = service.register()
    wrong = Registered(client.client_id, "cws_wrong", "x")
    for _ in range(10):
        assert error_of(service.token(wrong), 401) == "invalid_client"
    locked = service.token(wrong)
    assert error_of(locked, 429) == "temporarily_unavailable"
    assert int(locked.headers["retry-after"]) >= 1
    assert service.token(client).status_code == 200  # a public client id cannot be used to lock a workload out


def metric_values(service: Service) -> dict[str, float]:
    values = {}
    for line in httpx.get(service.base_url + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_issued_and_denied(service: Service) -> None:
    """The counts move (every series exists from the start at 0, so its mere presence would prove nothing)."""
    client = service.register()
    before = metric_values(service)
    service.token(client)
    service.token(client, scope="storage.read:/nope")
    after = metric_values(service)
    denied = 'credward_tokens_denied_total{reason="invalid_scope"}'
    assert after["credward_tokens_issued_total"] == before["credward_tokens_issued_total"] + 1
    assert after[denied] == before[denied] + 1
    assert after["credward_token_request_duration_seconds_count"] == (
        before["credward_token_request_duration_seconds_count"] + 2
    )


def test_health_and_openapi(service: Service) -> None:
    assert httpx.get(service.base_url + "/healthz").status_code == 200
    assert httpx.get(service.base_url + "/readyz").json()["status"] == "ready"
    doc = httpx.get(service.base_url + "/openapi.json").json()
    form = doc["paths"]["/oauth2/token"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert form["schema"]["properties"]["grant_type"]["enum"] == ["client_credentials"]


def test_audit_lines_are_json_per_request(service: Service) -> None:
    import json

    client = service.register()
    jti = verify(service, service.token(client).json()["access_token"])["jti"]
    service.token(client, scope="storage.read:/nope")
    time.sleep(0.3)  # audit lines are flushed in batches every 50 ms
    records = [json.loads(line) for line in service.audit_lines()]
    issued = [r for r in records if r.get("jti") == jti]
    assert issued
    assert issued[0]["outcome"] == "issued"
    assert issued[0]["client_id"] == client.client_id
    assert issued[0]["scope"] == "storage.read:/data storage.modify:/data/out"
    denied = [r for r in records if r.get("client_id") == client.client_id and r["outcome"] == "denied"]
    assert denied[-1]["reason"] == "invalid_scope"


def raw_exchange(service: Service, request: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and read until the server's first full answer (or it closes)."""
    url = urlsplit(service.base_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("who", ["wrong secret", "unknown client"])
def test_a_bad_basic_secret_gets_no_100_continue(service: Service, who: str) -> None:
    """Authenticated from the header first: the server is never asked for the body, so never says 100 Continue."""
    client = service.register()
    user, secret = (client.client_id, "cws_wrong") if who == "wrong secret" else ("nobody", client.secret)
    header = base64.b64encode(f"{user}:{secret}".encode()).decode()
    body = b"grant_type=client_credentials"
    head = (
        f"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {header}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    answer = raw_exchange(service, head)  # the body is never sent: a server waiting for it would time out
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"100 Continue" not in answer


def test_a_good_basic_secret_gets_100_continue_and_a_token(service: Service) -> None:
    client = service.register()
    header = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    body = b"grant_type=client_credentials"
    head = (
        f"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {header}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    url = urlsplit(service.base_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as sock:
        sock.sendall(head)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim[:200]
        sock.sendall(body)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]
    assert b"access_token" in rest


def test_a_percent_encoded_token_path_is_not_the_token_endpoint(service: Service) -> None:
    client = service.register()
    header = base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()
    body = b"grant_type=client_credentials"
    answer = raw_exchange(
        service,
        (
            f"POST /oauth2%2Ftoken HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {header}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"access_token" not in answer


ALLOWED_IN_DESCRIPTIONS = set(range(0x20, 0x22)) | set(range(0x23, 0x5C)) | set(range(0x5D, 0x7F))


@pytest.mark.parametrize("scope", ['storage.read:/a"b', "storage.read:/a\\b", "storage.read:/ü", 'x"\\y'])
def test_error_descriptions_hold_only_rfc6749_characters(service: Service, scope: str) -> None:
    """authlib and oauthlib parse them; the client's own input comes back only in §5.2's character set."""
    client = service.register()
    response = service.token(client, scope=scope)
    assert error_of(response, 400) == "invalid_scope"
    description = response.json()["error_description"]
    assert description
    assert all(ord(c) in ALLOWED_IN_DESCRIPTIONS for c in description), description


def test_discovery_has_no_invented_capabilities(service: Service) -> None:
    meta = httpx.get(service.base_url + "/.well-known/oauth-authorization-server").json()
    assert meta["response_types_supported"] == []
    assert "token_endpoint_auth_signing_alg_values_supported" not in meta
    assert meta["scopes_supported"] == ["storage.read:/", "storage.modify:/"]
    for key in ("token_endpoint", "jwks_uri", "introspection_endpoint", "revocation_endpoint"):
        assert httpx.get(meta[key]).status_code != 404, key

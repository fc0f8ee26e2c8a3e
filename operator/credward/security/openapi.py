"""The OpenAPI 3.1 document the service serves at ``/openapi.json``.

The admin API's schemas are generated from its wire models (:mod:`credward.api.admin`, pydantic's
``models_json_schema``), so what is published is what the service enforces and the operator sends. The
OAuth form schemas are written out here (RFC 6749 forms are no JSON models); schema-driven fuzzers
(schemathesis) build valid and invalid token requests from them.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from credward.api.admin import CLIENT_ID_PATTERN, AccountIn, AccountView, BatchIn, BatchOut, RoleMappingsIn, ServiceInfo
from credward.security.settings import Settings

_REF = "#/components/schemas/{model}"


def admin_schemas() -> dict[str, Any]:
    """JSON Schemas of the admin API's bodies (requests as validated, responses as serialized, by alias)."""
    _, top = models_json_schema(
        [
            (AccountIn, "validation"),
            (RoleMappingsIn, "validation"),
            (BatchIn, "validation"),
            (AccountView, "serialization"),
            (BatchOut, "serialization"),
            (ServiceInfo, "serialization"),
        ],
        by_alias=True,
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


_ADMIN_ERROR = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
_EVENT = {
    "type": "object",
    "required": ["cursor", "kind", "subject", "client_id", "revoked_at"],
    "properties": {
        "cursor": {"type": "integer"},
        "kind": {"type": "string", "enum": ["account", "token"]},
        "subject": {"type": "string", "description": "client id (account) or jti (token)"},
        "client_id": {"type": "string"},
        "revoked_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

_OAUTH_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_client",
                "invalid_grant",
                "invalid_scope",
                "invalid_target",
                "unauthorized_client",
                "unsupported_grant_type",
                "temporarily_unavailable",
            ],
        },
        "error_description": {"type": "string"},
    },
}

_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string", "description": "client_secret_post only"},
        "client_secret": {"type": "string", "description": "client_secret_post only"},
        "scope": {"type": "string", "description": "space-separated; a subset of the client's scopes"},
        "audience": {"type": "string"},
        "resource": {"type": "string", "format": "uri", "description": "RFC 8707"},
    },
    "additionalProperties": True,
}

_TOKEN_OPERATION_FORM = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": {"type": "string"},
        "token_type_hint": {"type": "string", "enum": ["access_token"]},
        "client_id": {"type": "string"},
        "client_secret": {"type": "string"},
    },
    "additionalProperties": True,
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_responses() -> dict[str, Any]:
    return {
        "400": _json(_OAUTH_ERROR, "RFC 6749 §5.2 error"),
        "401": {
            **_json(_OAUTH_ERROR, "invalid_client"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "413": _json(_OAUTH_ERROR, "request body over 16 KiB"),
        "429": {
            **_json(_OAUTH_ERROR, "too many failed authentications"),
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    }


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _admin(
    summary: str, responses: dict[str, Any], body: dict[str, Any] | None = None, *, account: bool = True
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"adminBearer": []}],
        "responses": {
            **responses,
            "401": _json(_ADMIN_ERROR, "no or invalid credentials"),
            "403": _json(_ADMIN_ERROR, "caller not allowed"),
        },
    }
    if account:
        op["parameters"] = [
            {
                "name": "clientId",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": CLIENT_ID_PATTERN},
            }
        ]
        op["responses"]["400"] = _json(_ADMIN_ERROR, "malformed client id or body; the description names the field")
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi_document(settings: Settings) -> dict[str, Any]:
    token_response = {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "minimum": 1},
            "scope": {"type": "string"},
        },
    }
    view = _ref("AccountView")
    not_found = _json(_ADMIN_ERROR, "no such account")
    return {
        "openapi": "3.1.0",
        "info": {"title": "credward security service", "version": "1"},
        "servers": [{"url": settings.issuer}],
        "components": {
            "securitySchemes": {
                "clientBasic": {"type": "http", "scheme": "basic"},
                "adminBearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": admin_schemas(),
        },
        "paths": {
            "/oauth2/token": {
                "post": {
                    "summary": "RFC 6749 §4.4 client-credentials grant",
                    "security": [{"clientBasic": []}, {}],
                    "requestBody": _form_body(_TOKEN_FORM),
                    "responses": {"200": _json(token_response, "an access token"), **_error_responses()},
                }
            },
            "/oauth2/introspect": {
                "post": {
                    "summary": "RFC 7662 introspection (the token's own client, or an allowed resource server)",
                    "security": [{"clientBasic": []}, {}],
                    "requestBody": _form_body(_TOKEN_OPERATION_FORM),
                    "responses": {
                        "200": _json({"type": "object", "required": ["active"]}, "introspection result"),
                        **_error_responses(),
                    },
                }
            },
            "/oauth2/revoke": {
                "post": {
                    "summary": "RFC 7009 token revocation (client-authenticated)",
                    "security": [{"clientBasic": []}, {}],
                    "requestBody": _form_body(_TOKEN_OPERATION_FORM),
                    "responses": {"200": {"description": "revoked, or the token was not valid"}, **_error_responses()},
                }
            },
            "/v1/revocations": {
                "get": {
                    "summary": "Revocation feed: JSON long-poll, or server-sent events with Accept: text/event-stream",
                    "parameters": [
                        {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0}},
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["events", "cursor"],
                                "properties": {
                                    "events": {"type": "array", "items": _EVENT},
                                    "cursor": {"type": "integer"},
                                },
                            },
                            "feed entries",
                        )
                    },
                }
            },
            "/jwks.json": {
                "get": {"summary": "RFC 7517 key set", "responses": {"200": _json({"type": "object"}, "keys")}}
            },
            "/.well-known/openid-configuration": {
                "get": {"summary": "OIDC discovery", "responses": {"200": _json({"type": "object"}, "metadata")}}
            },
            "/.well-known/oauth-authorization-server": {
                "get": {"summary": "RFC 8414 metadata", "responses": {"200": _json({"type": "object"}, "metadata")}}
            },
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "readiness: store reachable, keys loaded",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}},
            "/v1/admin/info": {
                "get": _admin(
                    "the store's id, its number of accounts, the hash key's id and the token TTL cap",
                    {"200": _json(_ref("ServiceInfo"), "service info")},
                    account=False,
                )
            },
            "/v1/admin/batch": {
                "post": _admin(
                    "many gets, puts and role-mapping replacements in order, each answered as its own endpoint would",
                    {"200": _json(_ref("BatchOut"), "one result per operation")},
                    _ref("BatchIn"),
                    account=False,
                )
            },
            "/v1/admin/accounts/{clientId}": {
                "get": _admin(
                    "read an account (secret ids, never hashes)",
                    {"200": _json(view, "account"), "404": not_found},
                ),
                "put": _admin(
                    "create or replace an account (its role mappings stay)",
                    {"200": _json(view, "replaced"), "201": _json(view, "created")},
                    _ref("AccountIn"),
                ),
                "delete": _admin("delete an account", {"204": {"description": "deleted"}, "404": not_found}),
            },
            "/v1/admin/accounts/{clientId}/role-mappings": {
                "put": _admin(
                    "replace the account's role mappings",
                    {"200": _json(view, "updated"), "404": not_found},
                    _ref("RoleMappingsIn"),
                ),
            },
            "/v1/admin/accounts/{clientId}/revoke": {
                "post": _admin("revoke an account", {"200": _json(_EVENT, "feed entry"), "404": not_found}),
            },
        },
    }

"""``credward status``'s table from a resource, its bindings and the service's AccountView (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from credward.api.admin import AccountView
from credward.client.status import render, rows

pytestmark = pytest.mark.unit

CREDENTIAL: dict[str, Any] = {
    "metadata": {"name": "ci", "namespace": "team"},
    "spec": {"displayName": "CI", "audiences": ["https://a.example"], "tokenTTL": "5m", "groups": ["/ci"]},
    "status": {
        "clientId": "c1",
        "identity": "c1@clients.security",
        "activeSecrets": [
            {"id": "s2", "createdAt": "2026-01-02T00:00:00Z"},
            {"id": "s1", "createdAt": "2026-01-01T00:00:00Z"},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Registered",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    },
}
BINDINGS = [
    {"metadata": {"name": "ci-store"}, "spec": {"serviceAccount": "ci", "roles": ["builder"]}},
    {"metadata": {"name": "someone-else"}, "spec": {"serviceAccount": "other", "roles": ["admin"]}},
]


def view(**changes: Any) -> AccountView:
    body: dict[str, Any] = {
        "clientId": "c1",
        "identity": "c1@clients.security",
        "status": "active",
        "audiences": ["https://a.example"],
        "tokenTTLSeconds": 300,
        "effectiveTokenTTLSeconds": 300,
        "groups": ["/ci"],
        "secrets": [{"id": "s1"}, {"id": "s2"}],
        "roleMappings": [{"name": "ci-store", "roles": ["builder"], "permissions": []}],
    }
    body.update(changes)
    return AccountView.model_validate(body)


def by_field(credential: dict[str, Any], v: AccountView | None) -> dict[str, Any]:
    return {r.field: r for r in rows(credential, BINDINGS, v)}


def test_agreeing_sides() -> None:
    table = by_field(CREDENTIAL, view())
    for field in (
        "clientId",
        "identity",
        "state",
        "audiences",
        "groups",
        "tokenTTL",
        "secretIds",
        "roleBindings",
        "roles",
    ):
        assert table[field].agrees is True, table[field]
    assert table["secretIds"].kubernetes == "s1, s2"
    assert table["tokenTTL"].kubernetes == "300s"
    assert table["roleBindings"].kubernetes == "ci-store"  # only bindings naming this credential
    assert table["condition Ready"].kubernetes == "True (Registered)"


def test_disagreements_are_marked() -> None:
    table = by_field(CREDENTIAL, view(status="revoked", secrets=[{"id": "s1"}], effectiveTokenTTLSeconds=60))
    assert table["state"].agrees is False
    assert table["secretIds"].agrees is False
    assert table["effectiveTokenTTL"].service == "60s"
    text = render(list(table.values()))
    state_line = next(line for line in text.splitlines() if line.startswith("state"))
    assert "!=" in state_line
    assert "!=" not in next(line for line in text.splitlines() if line.startswith("clientId"))


def test_without_the_service_nothing_agrees_or_disagrees() -> None:
    table = rows(CREDENTIAL, BINDINGS, None)
    assert all(r.agrees is None for r in table)
    assert "security service: not asked" in render(table, "not asked")

"""``credward status``'s table: a ServiceAccountCredential as Kubernetes holds it, beside the service's view.

Pure: the resource, its RoleBindings and the admin API's ``AccountView`` in,
rows out. Neither side ever holds a secret value (the Secret is not read; the
service shows secret ids and times only), so nothing here can print one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from credward.api.admin import AccountView
from credward.api.models import CredentialSpec, CredentialStatus, RoleBindingSpec
from credward.domain.durations import parse_duration
from credward.domain.timefmt import parse_rfc3339, to_rfc3339
from credward.errors import InvalidDuration

ABSENT = "-"


@dataclass(frozen=True, slots=True)
class Row:
    """One field on both sides; ``agrees`` is None when the field exists on one side only."""

    field: str
    kubernetes: str
    service: str
    agrees: bool | None


def _time(value: datetime | str | None) -> str:
    if value is None:
        return ABSENT
    return to_rfc3339(parse_rfc3339(value) if isinstance(value, str) else value)


def _list(values: Sequence[str]) -> str:
    return ", ".join(values) if values else ABSENT


def _ttl_seconds(text: str) -> str:
    try:
        return f"{parse_duration(text).total_seconds():g}s"
    except InvalidDuration:
        return text


def rows(credential: dict[str, Any], bindings: Sequence[dict[str, Any]], view: AccountView | None) -> list[Row]:
    """The comparison, field by field (``view`` None: the service was not asked or does not know the account)."""
    try:
        spec = CredentialSpec.model_validate(credential.get("spec") or {})
    except ValidationError:
        spec = None
    status = CredentialStatus.model_validate(credential.get("status") or {})
    name = str(credential.get("metadata", {}).get("name", ""))
    mine = []
    for binding in bindings:
        try:
            parsed = RoleBindingSpec.model_validate(binding.get("spec") or {})
        except ValidationError:
            continue
        if parsed.service_account == name:
            mine.append((str(binding["metadata"]["name"]), parsed))
    k8s_roles = sorted({role for _, b in mine for role in b.roles})
    service_roles = sorted({role for m in view.role_mappings for role in m.roles}) if view else []

    def both(field: str, kubernetes: str, service: str) -> Row:
        return Row(field, kubernetes, service if view else ABSENT, kubernetes == service if view else None)

    out = [
        both("clientId", status.client_id or ABSENT, view.client_id if view else ABSENT),
        both("identity", status.identity or ABSENT, view.identity if view else ABSENT),
        both(
            "state",
            "revoked" if spec and spec.revoked else "active",
            view.status if view else ABSENT,
        ),
        both("expiresAt", _time(status.expires_at), _time(view.expires_at) if view else ABSENT),
        both("audiences", _list(spec.audiences) if spec else ABSENT, _list(view.audiences) if view else ABSENT),
        both("groups", _list(spec.groups) if spec else ABSENT, _list(view.groups) if view else ABSENT),
        both(
            "tokenTTL",
            _ttl_seconds(spec.token_ttl) if spec else ABSENT,
            f"{view.token_ttl_seconds}s" if view else ABSENT,
        ),
        both(
            "secretIds",
            _list(sorted(s.id for s in status.active_secrets)),
            _list(sorted(s.id for s in view.secrets)) if view else ABSENT,
        ),
        both(
            "roleBindings",
            _list(sorted(n for n, _ in mine)),
            _list(sorted(m.name for m in view.role_mappings)) if view else ABSENT,
        ),
        both("roles", _list(k8s_roles), _list(service_roles)),
    ]
    if view is not None and view.effective_token_ttl_seconds != view.token_ttl_seconds:
        out.append(Row("effectiveTokenTTL", ABSENT, f"{view.effective_token_ttl_seconds}s", None))
    for cond in status.conditions:
        text = f"{cond.status} ({cond.reason})" + (f": {cond.message}" if cond.message else "")
        out.append(Row(f"condition {cond.type}", text, ABSENT, None))
    out.append(Row("updatedAt", ABSENT, _time(view.updated_at) if view and view.updated_at else ABSENT, None))
    return out


def render(rows_: Sequence[Row], service_note: str | None = None) -> str:
    """A plain-text table; ``!=`` marks fields where the two sides disagree."""
    head = Row("FIELD", "KUBERNETES", "SECURITY SERVICE", None)
    table = [head, *rows_]
    widths = [max(len(r.field) for r in table), max(len(r.kubernetes) for r in table)]
    lines = []
    for r in table:
        mark = "!=" if r.agrees is False else "  "
        lines.append(f"{r.field:<{widths[0]}}  {r.kubernetes:<{widths[1]}} {mark} {r.service}".rstrip())
    if service_note:
        lines.append(f"\nsecurity service: {service_note}")
    return "\n".join(lines)

"""Pure conversions between the model and stored values, shared by both backends.

An account's secrets and role mappings are small lists that are always replaced
whole and never queried by their contents, so they are stored as JSON beside the
account: the token endpoint then reads one row (one round trip) per request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from credward.api.admin import RoleMapping, SecretHash
from credward.errors import UnstorableText
from credward.security.model import Account

__all__ = ["UnstorableText"]  # both backends refuse such text on write, and find nothing by such a key


def storable(text: str) -> bool:
    """Whether ``text`` can be stored (see :class:`UnstorableText`)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_storable(**values: str | Sequence[str]) -> None:
    """Raise :class:`UnstorableText` naming the first field that holds a NUL character or a lone surrogate."""
    for name, value in values.items():
        items = [value] if isinstance(value, str) else value
        if not all(storable(item) for item in items):
            raise UnstorableText(f"{name} contains a NUL character or a lone surrogate, which cannot be stored")


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (never local time)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc(value)


def time_to_text(value: datetime | None) -> str | None:
    """Fixed-width UTC text (``0999-01-02T03:04:05.000006Z``), so SQLite compares times correctly as strings.

    ``isoformat`` rather than ``strftime``: glibc's ``%Y`` does not zero-pad years before 1000.
    """
    if value is None:
        return None
    return to_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def time_from_text(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=UTC)


def check_account(account: Account) -> None:
    """Every text of an account must be storable (see :class:`UnstorableText`)."""
    check_storable(
        client_id=account.client_id,
        identity=account.identity,
        display_name=account.display_name,
        namespace=account.namespace,
        name=account.name,
        audiences=account.audiences,
        groups=account.groups,
    )


def check_mappings(client_id: str, mappings: Sequence[RoleMapping]) -> None:
    check_storable(
        client_id=client_id,
        role_mappings=[
            text for m in mappings for text in (m.name, *m.roles, *(part for p in m.permissions for part in p.path))
        ],
    )


def secrets_to_json(secrets: Sequence[SecretHash]) -> str:
    return json.dumps(
        [
            {
                "id": s.id,
                "hash": s.hash,
                "created_at": time_to_text(s.created_at),
                "not_after": time_to_text(s.not_after),
            }
            for s in secrets
        ],
        separators=(",", ":"),
    )


def secrets_from_json(text: str) -> tuple[SecretHash, ...]:
    items: list[dict[str, Any]] = json.loads(text)
    return tuple(
        SecretHash(
            id=str(i["id"]),
            hash=str(i["hash"]),
            created_at=time_from_text(i.get("created_at")),
            not_after=time_from_text(i.get("not_after")),
        )
        for i in items
    )


def mappings_to_json(mappings: Sequence[RoleMapping]) -> str:
    """The mappings as the admin API's JSON (field names as pushed), validated again when read."""
    return json.dumps([m.model_dump(mode="json") for m in mappings], separators=(",", ":"))


def mappings_from_json(text: str | None) -> tuple[RoleMapping, ...]:
    """Decode stored mappings; ``None`` (no row yet) means none."""
    if text is None:
        return ()
    items: list[dict[str, Any]] = json.loads(text)
    return tuple(RoleMapping.model_validate(i) for i in items)


def strings_to_json(values: Sequence[str]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def strings_from_json(text: str) -> tuple[str, ...]:
    return tuple(str(v) for v in json.loads(text))


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: which backend, and its file path or DSN."""

    backend: str  # "sqlite" or "postgres"
    target: str  # file path for sqlite, the DSN itself for postgres


def parse_store_url(url: str) -> StoreURL:
    """Read ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``postgresql://...``.

    Raises ValueError naming what is wrong, so a bad setting fails at startup.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        prefix = "sqlite:///"
        if not url.lower().startswith(prefix) or len(url) == len(prefix):
            raise ValueError(
                f"store URL {url!r}: expected sqlite:///<path to a file> (four slashes for an absolute path)"
            )
        path = url[len(prefix) :].split("?", 1)[0]
        if path == ":memory:":
            raise ValueError(f"store URL {url!r}: the store must be a file so it survives restarts")
        return StoreURL("sqlite", str(Path(path)))
    if scheme in {"postgresql", "postgres"}:
        return StoreURL("postgres", url)
    raise ValueError(f"store URL {url!r}: unknown scheme {scheme!r}; use sqlite:///<path> or postgresql://...")

"""The security service's revocation feed, read by validators so revoked tokens stop working in seconds.

``GET /v1/revocations?since=<cursor>&wait=<seconds>`` long-polls: it answers
at once with the events after ``cursor``, or waits up to ``wait`` seconds for
one. An event revokes one token (``kind=token``, ``subject`` = its ``jti``) or
a whole account (``kind=account``: every token of that client issued up to the
revocation). :class:`RevocationList` is the pure state; the validator runs the
polling loop (:meth:`credward.client.TokenValidator.follow_revocations`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from credward.client.discovery import json_object
from credward.client.errors import IssuerUnavailable


@dataclass(frozen=True, slots=True)
class Revocation:
    cursor: int
    kind: str  # "token" or "account"
    subject: str  # the jti, or the client id
    client_id: str
    revoked_at: float  # seconds since the epoch
    expires_at: float | None  # after this the entry matters to nobody


def feed_request(url: str, since: int, wait: float) -> httpx.Request:
    params: dict[str, str | int] = {"since": since, "wait": f"{wait:g}"}
    return httpx.Request("GET", url, params=params, headers={"Accept": "application/json"})


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def parse_feed(response: httpx.Response) -> tuple[list[Revocation], int]:
    """The events of one answer and the cursor to ask from next."""
    body = json_object(response, "revocation feed")
    raw_events, cursor = body.get("events"), body.get("cursor")
    if not isinstance(raw_events, list) or not isinstance(cursor, int):
        raise IssuerUnavailable(f"revocation feed at {response.request.url} answered without events and cursor")
    events: list[Revocation] = []
    for raw in raw_events:
        if not isinstance(raw, dict):
            continue
        revoked_at = _epoch(raw.get("revoked_at"))
        cursor_of, kind, subject, client_id = (raw.get(k) for k in ("cursor", "kind", "subject", "client_id"))
        if revoked_at is None or not isinstance(cursor_of, int):
            continue
        if not (isinstance(kind, str) and isinstance(subject, str) and isinstance(client_id, str)):
            continue
        events.append(Revocation(cursor_of, kind, subject, client_id, revoked_at, _epoch(raw.get("expires_at"))))
    return events, cursor


class RevocationList:
    """Which tokens the feed has revoked; entries are forgotten once the tokens they name have expired."""

    def __init__(self) -> None:
        self._tokens: dict[str, float | None] = {}  # jti -> when the token expires
        self._accounts: dict[str, float] = {}  # client id -> tokens issued at or before this are revoked
        self._lock = threading.Lock()
        self.cursor = 0

    def __bool__(self) -> bool:
        return bool(self._tokens) or bool(self._accounts)

    def apply(self, events: list[Revocation], cursor: int) -> None:
        with self._lock:
            for event in events:
                if event.kind == "token":
                    self._tokens[event.subject] = event.expires_at
                elif event.kind == "account":
                    self._accounts[event.client_id] = max(event.revoked_at, self._accounts.get(event.client_id, 0.0))
            # The service's cursor, even a lower one: it answers from the start when ours is from a store
            # it no longer has (wiped or replaced), and keeping ours would ask it to start over every time.
            self.cursor = cursor

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """True if the feed named this token or revoked its account after it was issued."""
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self._tokens:
            return True
        revoked_at = self._accounts.get(str(claims.get("client_id")))
        if revoked_at is None:
            return False
        issued_at = claims.get("iat")
        # iat has whole seconds: a token from the revocation's own second counts as revoked (fail closed)
        return not isinstance(issued_at, int | float) or issued_at <= revoked_at

    def forget_expired(self, now: float, max_token_lifetime: float) -> None:
        """Drop entries no live token can match (account entries after the longest token lifetime)."""
        with self._lock:
            self._tokens = {j: exp for j, exp in self._tokens.items() if exp is None or exp > now}
            self._accounts = {c: at for c, at in self._accounts.items() if at + max_token_lifetime > now}

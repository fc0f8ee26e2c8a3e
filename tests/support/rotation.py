"""What every crash-safety and zero-downtime test checks: the Secret always holds a secret the service accepts.

:class:`Watch` looks at one credential as a workload and an auditor would: it reads the Secret, asks the
real token endpoint for a token with the Secret's ``client-secret`` (it must be granted), and compares the
deadlines the service holds with the ones the Secret records (the service may hold none yet, never a later
one). It remembers every value it saw, so that after convergence every value the Secret no longer holds can
be shown to be refused.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from credward.api import ANNOTATION_SECRET_ID, KEY_CLIENT_ID, KEY_CLIENT_SECRET, KEY_PREVIOUS_CLIENT_SECRET
from credward.devcluster import ControlPlane
from credward.domain.credential import ANNOTATION_PREVIOUS_ID, ANNOTATION_PREVIOUS_NOT_AFTER
from credward.domain.timefmt import parse_rfc3339
from tests.support.kube import condition, get
from tests.support.service import SecurityServer


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@dataclass
class Watch:
    plane: ControlPlane
    security: SecurityServer
    namespace: str
    name: str
    seen: set[str] = field(default_factory=set, repr=False)  # values only in memory, never printed
    refused: set[str] = field(default_factory=set, repr=False)  # seen values the service refused (retired for good)
    checks: int = 0
    client_id: str | None = None
    probe_address: str = "127.0.0.2"

    @property
    def secret_name(self) -> str:
        return f"{self.name}-credentials"

    def check(self) -> dict[str, str] | None:
        """The invariant, now: returns the Secret's data (None while no Secret exists yet).

        What the service holds is read *before* the Secret: a rotation between the two reads then only adds
        secrets without deadlines, while the other order could see the old current secret's new deadline.
        """
        if self.client_id is None:
            first = get(self.plane, "secret", self.secret_name, self.namespace)
            if first is None:
                return None
            self.client_id = decoded(first)[KEY_CLIENT_ID]
        held = self.held_deadlines()
        secret = get(self.plane, "secret", self.secret_name, self.namespace)
        if secret is None:
            return None
        data = decoded(secret)
        notes = secret["metadata"].get("annotations") or {}
        self.client_id = data[KEY_CLIENT_ID]
        current = data[KEY_CLIENT_SECRET]
        self.seen.add(current)
        if KEY_PREVIOUS_CLIENT_SECRET in data:
            self.seen.add(data[KEY_PREVIOUS_CLIENT_SECRET])
        response = self.security.token(self.client_id, current)
        # Never print the response body or the value: a failure names the secret's id only.
        assert response.status_code == 200, (
            f"the token endpoint refused the secret {notes.get(ANNOTATION_SECRET_ID)} in Secret "
            f"{self.namespace}/{self.secret_name}: HTTP {response.status_code}"
        )
        current_id = notes.get(ANNOTATION_SECRET_ID)
        assert held.get(current_id) is None, f"the Secret's current secret {current_id} has a deadline in the service"
        previous_id, recorded = notes.get(ANNOTATION_PREVIOUS_ID), notes.get(ANNOTATION_PREVIOUS_NOT_AFTER)
        if previous_id is not None and recorded is not None and held.get(previous_id) is not None:
            deadline = held[previous_id]
            assert deadline is not None
            assert deadline <= parse_rfc3339(recorded), (
                f"the service holds secret {previous_id} until {deadline}, later than the {recorded} recorded"
            )
        self.checks += 1
        return data

    def held_deadlines(self) -> dict[str | None, datetime | None]:
        """Secret id -> the notAfter the service holds for it (None: no deadline)."""
        assert self.client_id is not None
        account = self.security.account(self.client_id)
        if account is None:
            return {}
        return {s["id"]: parse_rfc3339(s["notAfter"]) if s.get("notAfter") else None for s in account["secrets"]}

    def converged(self) -> bool:
        """One secret left, in the Secret, the service and the status; every other value seen is refused."""
        data = self.check()
        obj = get(self.plane, "sac", self.name, self.namespace)
        ready, rotating = condition(obj, "Ready"), condition(obj, "Rotating")
        if data is None or obj is None or not ready or ready["status"] != "True":
            return False
        if not rotating or rotating["status"] != "False" or KEY_PREVIOUS_CLIENT_SECRET in data:
            return False
        active = [s["id"] for s in obj["status"].get("activeSecrets", [])]
        if sorted(str(k) for k in self.held_deadlines()) != active:
            return False
        return all(self.is_refused(value) for value in self.seen - {data[KEY_CLIENT_SECRET]})

    def is_refused(self, value: str) -> bool:
        """Ask once more for a token with a value the Secret no longer holds (remembered once refused).

        From its own loopback source address: the service throttles an address after 50 refused requests a
        minute (429 for *every* request from it), which must never hit the checks that expect a token.
        """
        if value in self.refused:
            return True
        assert self.client_id is not None
        transport = httpx.HTTPTransport(local_address=self.probe_address)
        with httpx.Client(base_url=self.security.base_url, transport=transport, timeout=10) as http:
            response = http.post(
                "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(self.client_id, value)
            )
        if response.status_code == 401:
            self.refused.add(value)
        return value in self.refused


def now() -> datetime:
    return datetime.now(UTC)

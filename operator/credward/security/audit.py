"""One JSON line per token issuance or denial, on the ``credward.audit`` logger.

What goes in: outcome, reason, client id, jti, scopes, audience, auth method,
client address. What never goes in: a secret, a token, or raw client input
that could be one. An unknown client id is logged as a fingerprint, because a
client that swapped its id and secret fields would otherwise leak its secret.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from credward.domain.secrets import fingerprint

audit_log = logging.getLogger("credward.audit")


def client_label(client_id: str | None, known: bool) -> dict[str, str]:
    if client_id is None:
        return {}
    return {"client_id": client_id} if known else {"client_id_fp": fingerprint(client_id)}


def emit(event: str, outcome: str, **fields: Any) -> None:
    if not audit_log.isEnabledFor(logging.INFO):
        return
    record = {"ts": round(time.time(), 3), "event": event, "outcome": outcome}
    record.update({k: v for k, v in fields.items() if v is not None})
    audit_log.info(json.dumps(record, separators=(",", ":")))

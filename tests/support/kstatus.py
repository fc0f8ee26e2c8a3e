"""The real kstatus (sigs.k8s.io/cli-utils, built by ``credward dev build``) run over one object."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Health:
    """What ``status.Compute`` returned: Current, InProgress, Failed, ...; its message; the reason it gives."""

    status: str
    message: str
    reason: str | None


def compute(kstatus: Path, obj: Mapping[str, Any]) -> Health:
    proc = subprocess.run(
        [str(kstatus)], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kstatus failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    conditions = out["conditions"]
    return Health(status=out["status"], message=out["message"], reason=conditions[0]["reason"] if conditions else None)

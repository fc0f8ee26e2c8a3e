"""Go-style durations (``720h``, ``1h30m``, ``90s``), as Kubernetes users write them.

The CRD validates the same grammar with a pattern and CEL ``duration()``, so
anything the API server admitted parses here.
"""

from __future__ import annotations

import re
from datetime import timedelta

from credward.errors import InvalidDuration

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m`` into a timedelta; raise :class:`InvalidDuration` naming the input."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise InvalidDuration(f"{text!r} is not a duration such as '90s', '5m', '1h30m' or '720h'")
    seconds = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(text))
    if seconds <= 0:
        raise InvalidDuration(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go does for whole units (``1h30m0s`` -> ``1h30m``)."""
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    return out or "0s"

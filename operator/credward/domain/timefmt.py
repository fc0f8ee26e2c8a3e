"""RFC 3339 timestamps as Kubernetes writes them: UTC, whole seconds, ``Z`` suffix."""

from __future__ import annotations

from datetime import UTC, datetime


def to_rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def truncate(value: datetime) -> datetime:
    """Drop sub-second precision, which Kubernetes timestamps cannot hold."""
    return value.astimezone(UTC).replace(microsecond=0)

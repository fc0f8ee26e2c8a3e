"""Named fault-injection points: a test hook that kills the operator at one step of its work.

``CREDWARD_FAULT_POINT=<name>`` makes the process SIGKILL itself the first time it reaches the point of
that name, as a node failure or an OOM kill would, with no cleanup and no graceful shutdown. The crash-safety
tests start an operator armed at each point, restart it, and check that nothing a workload relies on broke.
Unset (always, outside those tests), :func:`reached` is one comparison against ``None``.

Each name is ``<step>:<what just completed>``; the step is a plan's ``step`` (``create``, ``rotate``,
``retire``), so a point fires only during that kind of change. :data:`POINTS` lists every point the
operator passes, in the order a reconcile passes them.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "CREDWARD_FAULT_POINT"

POINTS: tuple[str, ...] = (
    "create:registered",  # the first secret's hash is in the service, the Secret not written yet
    "create:secret-written",
    "rotate:registered",  # the new secret is registered beside the old one (no deadline yet)
    "rotate:secret-written",  # the Secret holds the new secret; the old one's deadline is not registered yet
    "rotate:deadline-registered",  # the service holds the old secret's notAfter; status not written yet
    "rotate:status-written",  # status written, events not posted yet
    "retire:unregistered",  # the service no longer holds the old secret; the Secret still does
    "retire:secret-written",  # the old value is gone from the Secret; status not written yet
    "retire:status-written",
)

_ARMED: str | None = os.environ.get(ENV) or None


def misconfigured() -> str | None:
    """Why ``CREDWARD_FAULT_POINT`` is wrong (it names no point), or None: a typo must not test nothing."""
    if _ARMED is None or _ARMED in POINTS:
        return None
    return f"{ENV}={_ARMED!r} names no fault point; known: {', '.join(POINTS)}"


def reached(step: str | None, what: str) -> None:
    """Die here (SIGKILL, no cleanup) if ``CREDWARD_FAULT_POINT`` names ``<step>:<what>``."""
    if _ARMED is None or step is None or f"{step}:{what}" != _ARMED:
        return
    sys.stderr.write(f"credward: fault point {_ARMED} reached: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

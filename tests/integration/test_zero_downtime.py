"""Zero downtime across rotations: a workload asking for tokens without pause never gets one refused.

The workload is ``credward.client``'s :class:`ClientCredentialsAuthorizer`, reading its secret from a Secret
volume laid out as the kubelet lays it out (:mod:`credward.devcluster.mount`). A kubelet stand-in copies the
Secret from the real API server into that volume ``LAG`` seconds late — the kubelet's sync period and cache
make that tens of seconds in a cluster; here it is scaled down with the grace period, and still far longer
than the operator's steps between registering a secret and writing it. Every iteration drops the cached
token, so each one is a real token request with the value the volume holds at that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.integration.test_operator import credential, decoded, ready
from tests.support.kube import apply, get
from tests.support.rotation import Watch
from tests.support.service import SecurityServer

from credward.client import ClientCredentialsAuthorizer
from credward.client.credentials import ClientSettings
from credward.devcluster import ControlPlane
from credward.devcluster.mount import write_secret_volume
from credward.devcluster.processes import ChildProcess
from credward.errors import CredwardError

pytestmark = pytest.mark.integration

LAG = 6.0  # seconds from the Secret's update in the API server to the file in the pod
GRACE = "12s"  # the grace period must outlast the lag, as gracePeriod must outlast the kubelet's in a cluster
ROTATIONS = 3


@dataclass
class Kubelet:
    """Copies one Secret into a volume ``lag`` seconds after the API server has it (a thread)."""

    plane: ControlPlane
    namespace: str
    name: str
    volume: Path
    lag: float
    versions: list[tuple[float, dict[str, str]]] = field(default_factory=list, repr=False)  # (seen at, data)
    mounted: list[str] = field(default_factory=list, repr=False)  # each client-secret value written (memory only)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                secret = get(self.plane, "secret", self.name, self.namespace)
                if secret is not None:
                    data = decoded(secret)
                    if not self.versions or self.versions[-1][1] != data:
                        self.versions.append((time.monotonic(), data))
                due = [d for seen, d in self.versions if seen <= time.monotonic() - self.lag]
                if due and (not self.mounted or due[-1]["client-secret"] != self.mounted[-1]):
                    write_secret_volume(self.volume, {k: v.encode() for k, v in due[-1].items()})
                    self.mounted.append(due[-1]["client-secret"])
                time.sleep(0.3)
        except BaseException as exc:  # told to the test, which fails on it
            self.error = exc


@pytest.fixture
def kubelet(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Kubelet]:
    k = Kubelet(control_plane, namespace, "steady-credentials", tmp_path / "volume", LAG)
    thread = threading.Thread(target=k.run, daemon=True)
    thread.start()
    yield k
    k.stop.set()
    thread.join(timeout=10)


def test_no_token_request_fails_through_three_rotations(
    control_plane: ControlPlane, operator: ChildProcess, security: SecurityServer, namespace: str, kubelet: Kubelet
) -> None:
    apply(control_plane, credential("steady", rotation={"period": "1m", "gracePeriod": GRACE}), namespace)
    ready(control_plane, namespace, "steady")
    deadline = time.monotonic() + LAG + 30
    while not kubelet.mounted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kubelet.mounted, "the kubelet stand-in never mounted the Secret"
    settings = ClientSettings(secret_path=kubelet.volume / "client-secret", base_url=security.base_url)
    failures: list[str] = []
    requests = 0
    asked = 0
    deadline = time.monotonic() + 240
    with ClientCredentialsAuthorizer(settings) as authorizer:
        # Until three rotations reached the volume and the last overlap closed (each rotation waits for the
        # previous overlap to close, so this also runs through three retirements of a secret still mounted late).
        while len(set(kubelet.mounted)) < ROTATIONS + 1 or time.monotonic() < settle_until(kubelet):
            assert time.monotonic() < deadline, f"only {len(set(kubelet.mounted)) - 1} rotations reached the volume"
            assert kubelet.error is None, f"the kubelet stand-in failed: {kubelet.error!r}"
            if len(set(kubelet.mounted)) < ROTATIONS + 1 and requests % 20 == 0:
                asked += 1  # ask for a rotation; it happens as soon as the previous overlap has closed
                control_plane.kubectl(
                    "annotate", "--overwrite", "sac", "steady", "-n", namespace, f"credward.io/rotate=r{asked}"
                )
            authorizer.invalidate()
            try:
                authorizer.get_token()
            except CredwardError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            requests += 1
            time.sleep(0.05)
    assert failures == [], f"{len(failures)} of {requests} token requests failed, first: {failures[0]}"
    assert requests > 200
    # The overlaps did close meanwhile: every value but the one mounted now is refused by the service.
    watch = Watch(control_plane, security, namespace, "steady")
    watch.check()
    for value in set(kubelet.mounted) - {kubelet.mounted[-1]}:
        assert watch.is_refused(value)


def settle_until(kubelet: Kubelet) -> float:
    """Keep going for one grace period after the last mounted change, so the last retirement happens meanwhile."""
    return kubelet.versions[-1][0] + LAG + 13 if kubelet.versions else float("inf")

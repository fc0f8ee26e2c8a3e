"""Start and stop a real local control plane: etcd, kube-apiserver, kube-controller-manager.

Everything binds to 127.0.0.1 on free ports and lives in one state directory
(certificates, data, logs, kubeconfigs). The pytest fixtures and ``make demo``
both use :class:`ControlPlane`. There are no nodes: Pods are admitted and
stored but never run.

The API server writes an audit log of every write (Metadata level, so never a
Secret's data) which tests read to count the writes a component made.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from credward.devcluster.build import Binaries, Builder
from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.pki import CertificateAuthority, service_account_keys, write_pair

log = logging.getLogger(__name__)

ADMIN_USER = "credward-dev-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only what credward relies on: owner-reference garbage collection, namespace deletion,
# ServiceAccounts (Pods need one), the kube-root-ca.crt ConfigMap, aggregated RBAC roles, and
# Deployments making ReplicaSets making Pods (so admission sees a workload's Pods as a cluster makes them;
# with no scheduler or kubelet they stay Pending).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)

_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "Metadata"},
    ],
}


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child when its parent dies, so no orphan outlives a killed test run."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def kubeconfig_document(server: str, ca_pem: bytes, user: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """A kubeconfig with everything embedded, so it works from any directory."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "credward-dev", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "credward-dev", "context": {"cluster": "credward-dev", "user": user}}],
        "current-context": "credward-dev",
    }


class ControlPlane:
    """A local etcd + kube-apiserver (+ kube-controller-manager) in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        binaries: Binaries | None = None,
        controller_manager: bool = True,
        startup_timeout: float = 120.0,
        audit_reads_of: Sequence[str] = (),
    ) -> None:
        self.state_dir = state_dir.resolve()
        self._binaries = binaries
        self._with_kcm = controller_manager
        self._audit_reads_of = tuple(audit_reads_of)  # users whose reads are audited too (benchmarks count them)
        self._timeout = startup_timeout
        self._procs: list[_Process] = []
        self._ca: CertificateAuthority | None = None
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.audit_log = self.log_dir / "audit.log"
        self.server = ""

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object, tb: TracebackType | None = None) -> None:
        self.stop()

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = Builder().ensure()
        return self._binaries

    def start(self) -> None:
        """Start etcd, then the API server, then the controller manager; wait until each is ready."""
        binaries = self.binaries
        for d in (self.pki_dir, self.log_dir, self.state_dir / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        try:
            etcd_url = self._start_etcd(binaries)
            self._start_apiserver(binaries, etcd_url)
            if self._with_kcm:
                self._start_controller_manager(binaries)
                self._wait_default_service_account()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every component, newest first; escalate to SIGKILL after 10 s."""
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        deadline = time.monotonic() + 10
        for proc in reversed(self._procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self._procs.clear()

    # -- helpers for users of the plane ------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this plane; on failure with ``check`` raise with its stderr."""
        cmd = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def install_crds(self, crd_dir: Path) -> list[str]:
        """Server-side apply every ``*.yaml`` in ``crd_dir``; wait until each CRD is Established."""
        names = []
        for path in sorted(crd_dir.glob("*.yaml")):
            self.kubectl("apply", "--server-side", "--field-manager=credward", "-f", str(path))
            names.append(path.name.removesuffix(".yaml"))
        for name in names:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
        return names

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a client-certificate identity ``user`` in ``groups`` (for RBAC and audit tests)."""
        ca = self._require_ca()
        pair = ca.issue(user, organizations=tuple(groups), client=True)
        path = self.state_dir / f"kubeconfig-{user.replace(':', '-')}"
        doc = kubeconfig_document(self.server, ca.cert_pem, user, pair.cert_pem, pair.key_pem)
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def audit_events(self) -> Iterator[dict[str, Any]]:
        """Parsed audit events so far (write verbs only; reads are not logged)."""
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    # -- components --------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Process:
        log_path = self.log_dir / f"{name}.log"
        out = log_path.open("ab")
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        out.close()
        proc = _Process(name, popen, log_path)
        self._procs.append(proc)
        log.info("started %s (pid %d, log %s)", name, popen.pid, log_path)
        return proc

    def _wait(self, proc: _Process, ready: Any, what: str) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            code = proc.popen.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with code {code} while starting; log: {proc.log_path}\n{proc.tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{proc.name} did not become ready ({what}) within {self._timeout:.0f}s; "
            f"log: {proc.log_path}\n{proc.tail()}"
        )

    def _start_etcd(self, binaries: Binaries) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{client_url}/health", timeout=2) as resp:  # noqa: S310
                    return bool(json.load(resp).get("health") == "true")
            except (OSError, ValueError):
                return False

        self._wait(proc, ready, f"GET {client_url}/health")
        return client_url

    def _write_pki(self) -> dict[str, Path]:
        ca = CertificateAuthority()
        self._ca = ca
        ca_crt, _ = ca.write(self.pki_dir)
        serving = ca.issue(
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.0.0.1"),
            server=True,
        )
        srv_crt, srv_key = write_pair(serving, self.pki_dir, "apiserver")
        sa_key, sa_pub = service_account_keys()
        (self.pki_dir / "sa.key").write_bytes(sa_key)
        (self.pki_dir / "sa.key").chmod(0o600)
        (self.pki_dir / "sa.pub").write_bytes(sa_pub)
        policy = self.state_dir / "audit-policy.yaml"
        rules = list(_AUDIT_POLICY["rules"])
        if self._audit_reads_of:
            rules.insert(0, {"level": "Metadata", "users": list(self._audit_reads_of)})
        policy.write_text(yaml.safe_dump({**_AUDIT_POLICY, "rules": rules}))
        return {"ca": ca_crt, "crt": srv_crt, "key": srv_key, "policy": policy}

    def _require_ca(self) -> CertificateAuthority:
        if self._ca is None or not self.server:
            raise ControlPlaneError("the control plane is not started")
        return self._ca

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.server}{path}", timeout=5, context=self._ssl_context()) as resp:  # noqa: S310
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def _start_apiserver(self, binaries: Binaries, etcd_url: str) -> None:
        files = self._write_pki()
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        ca = self._require_ca()
        admin = ca.issue(ADMIN_USER, organizations=("system:masters",), client=True)
        write_pair(admin, self.pki_dir, "admin")
        self.kubeconfig.write_text(
            yaml.safe_dump(kubeconfig_document(self.server, ca.cert_pem, ADMIN_USER, admin.cert_pem, admin.key_pem))
        )
        self.kubeconfig.chmod(0o600)
        proc = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={self.pki_dir}",
                f"--tls-cert-file={files['crt']}",
                f"--tls-private-key-file={files['key']}",
                f"--client-ca-file={files['ca']}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.pki_dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
                f"--audit-policy-file={files['policy']}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                "--v=1",
            ],
        )
        self._wait(proc, lambda: self._get("/readyz")[0] == 200, f"GET {self.server}/readyz")
        log.info("kube-apiserver ready at %s", self.server)

    def _start_controller_manager(self, binaries: Binaries) -> None:
        ca = self._require_ca()
        pair = ca.issue("system:kube-controller-manager", client=True)
        kcfg = self.state_dir / "kubeconfig-controller-manager"
        kcfg.write_text(
            yaml.safe_dump(
                kubeconfig_document(
                    self.server, ca.cert_pem, "system:kube-controller-manager", pair.cert_pem, pair.key_pem
                )
            )
        )
        kcfg.chmod(0o600)
        port = free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kcfg}",
                f"--authentication-kubeconfig={kcfg}",
                f"--authorization-kubeconfig={kcfg}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.pki_dir / 'kcm'}",
                f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
                f"--root-ca-file={self.pki_dir / 'ca.crt'}",
                "--use-service-account-credentials=true",  # each controller gets its RBAC role, as in a real cluster
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        health = f"https://127.0.0.1:{port}/healthz"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = (
            ssl.CERT_NONE
        )  # its serving certificate is self-signed on the fly; this is a liveness probe only

        def ready() -> bool:
            try:
                with urllib.request.urlopen(health, timeout=2, context=ctx) as resp:
                    return int(resp.status) == 200
            except OSError:
                return False

        self._wait(proc, ready, f"GET {health}")

    def _wait_default_service_account(self) -> None:
        """The namespace 'default' gets its ServiceAccount from the controller manager; Pods need it."""
        kcm = next(p for p in self._procs if p.name == "kube-controller-manager")
        self._wait(
            kcm,
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            "ServiceAccount default/default",
        )

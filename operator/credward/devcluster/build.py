"""Build the local control plane's binaries from pinned Go modules.

There is no Docker engine and no binary download on the machines credward is
developed and tested on, so kube-apiserver, kube-controller-manager, kubectl
and etcd are compiled from the Go module proxy into a cache directory outside
the repository. A second run finds the binaries and returns at once.

``k8s.io/kubernetes`` cannot be ``go install``-ed directly: its go.mod replaces
every staging module with a ``./staging/src/...`` path. A small wrapper module
requires the release and replaces each staging module with the published
``k8s.io/<name> v0.Y.Z``; the list is read from the release's own go.mod.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from credward.devcluster.errors import ControlPlaneError

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kubectl")

# kstatus, the health rules Flux, kpt and Argo CD-style checks read objects with; built against the
# control plane's own k8s.io modules so the tests judge credward's status with the real library.
CLI_UTILS_VERSION = "v0.37.2"

# Helm, for the chart's tests (lint, template, install into the local control plane). Its go.mod has
# no replace directives, so the pinned module's own cmd/helm builds as a dependency of a tiny module.
HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3"

_KSTATUS_MAIN = """\
// Command kstatus reads one Kubernetes object as JSON on stdin and prints, as JSON, what
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute makes of it: status, message, conditions.
package main

import (
\t"encoding/json"
\t"fmt"
\t"io"
\t"os"

\t"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
\t"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
\tStatus     status.Status      `json:"status"`
\tMessage    string             `json:"message"`
\tConditions []status.Condition `json:"conditions"`
}

func main() {
\tif err := run(); err != nil {
\t\tfmt.Fprintln(os.Stderr, "kstatus:", err)
\t\tos.Exit(1)
\t}
}

func run() error {
\traw, err := io.ReadAll(os.Stdin)
\tif err != nil {
\t\treturn err
\t}
\tobj := &unstructured.Unstructured{}
\tif err := obj.UnmarshalJSON(raw); err != nil {
\t\treturn err
\t}
\tres, err := status.Compute(obj)
\tif err != nil {
\t\treturn err
\t}
\tout := result{Status: res.Status, Message: res.Message, Conditions: res.Conditions}
\tif out.Conditions == nil {
\t\tout.Conditions = []status.Condition{}
\t}
\treturn json.NewEncoder(os.Stdout).Encode(out)
}
"""

_STAGING_RE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


def default_cache_dir() -> Path:
    """``$CREDWARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/credward``, else ``~/.cache/credward``."""
    explicit = os.environ.get("CREDWARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "credward"


@dataclass(frozen=True)
class Binaries:
    """Paths of the built executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """The staging modules a Kubernetes release's go.mod replaces with local paths."""
    return sorted(set(_STAGING_RE.findall(kubernetes_gomod)))


def staging_version(kubernetes_version: str) -> str:
    """``v1.35.4`` -> ``v0.35.4``: the tag staging modules are published under."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    return f"v0.{match.group(1)}.{match.group(2)}"


def kubernetes_wrapper_gomod(kubernetes_version: str, staging: list[str], go_directive: str) -> str:
    """go.mod of the wrapper module that makes ``k8s.io/kubernetes`` buildable."""
    pinned = staging_version(kubernetes_version)
    lines = [
        "module credward.dev/kubebuild",
        "",
        f"go {go_directive}",
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
        "replace (",
        *(f"\t{module} => {module} {pinned}" for module in staging),
        ")",
        "",
    ]
    return "\n".join(lines)


def kstatus_wrapper_gomod(cli_utils_version: str, kubernetes_version: str) -> str:
    """go.mod of the kstatus command: cli-utils with the k8s.io modules of the control plane's release."""
    pinned = staging_version(kubernetes_version)
    return (
        "module credward.dev/kstatusbuild\n\ngo 1.26.0\n\nrequire (\n"
        f"\tk8s.io/api {pinned}\n\tk8s.io/apimachinery {pinned}\n\tsigs.k8s.io/cli-utils {cli_utils_version}\n)\n"
    )


def helm_ldflags(helm_version: str, client_go_version: str) -> str:
    """Helm's release ldflags: its version, and the Kubernetes version ``helm template`` and lint assume.

    Without them Helm reports the placeholder ``v3.x`` and renders for Kubernetes 1.20, which a
    chart's ``kubeVersion`` constraint refuses; Helm's Makefile takes the version from client-go.
    """
    match = re.fullmatch(r"v0\.(\d+)\.\d+", client_go_version)
    if not match:
        raise ValueError(f"not a k8s.io/client-go release version: {client_go_version!r}")
    flags = ["-s", "-w", f"-X {HELM_MODULE}/internal/version.version={helm_version}"]
    for pkg in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [
            f"-X {HELM_MODULE}/{pkg}.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/{pkg}.k8sVersionMinor={match.group(1)}",
        ]
    return " ".join(flags)


def _tools_go(packages: list[str]) -> str:
    imports = "\n".join(f'\t_ "{p}"' for p in packages)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


class Builder:
    """Builds (once) and locates the control-plane binaries under ``cache_dir``."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.bin_dir = self.cache_dir / "bin" / f"kubernetes-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"
        self.work_dir = self.cache_dir / "build"
        self.log_dir = self.cache_dir / "logs"
        k8s = staging_version(KUBERNETES_VERSION)
        self.kstatus_dir = self.cache_dir / "bin" / f"kstatus-cli-utils-{CLI_UTILS_VERSION}-k8s-{k8s}"

    def binaries(self) -> Binaries:
        return Binaries(
            etcd=self.bin_dir / "etcd",
            kube_apiserver=self.bin_dir / "kube-apiserver",
            kube_controller_manager=self.bin_dir / "kube-controller-manager",
            kubectl=self.bin_dir / "kubectl",
        )

    def is_built(self) -> bool:
        b = self.binaries()
        return all(os.access(p, os.X_OK) for p in (b.etcd, b.kube_apiserver, b.kube_controller_manager, b.kubectl))

    @property
    def kstatus(self) -> Path:
        """The kstatus command (see ``_KSTATUS_MAIN``)."""
        return self.kstatus_dir / "kstatus"

    def kstatus_is_built(self) -> bool:
        return os.access(self.kstatus, os.X_OK)

    @property
    def helm(self) -> Path:
        """The helm command, built from ``HELM_MODULE`` at ``HELM_VERSION``."""
        return self.cache_dir / "bin" / f"helm-{HELM_VERSION}" / "helm"

    def helm_is_built(self) -> bool:
        return os.access(self.helm, os.X_OK)

    def ensure_helm(self) -> Path:
        """Return the helm command, building it if missing."""
        if not self.helm_is_built():
            self._build_helm()
        return self.helm

    def ensure_kstatus(self) -> Path:
        """Return the kstatus command, building it if missing."""
        if not self.kstatus_is_built():
            self._build_kstatus()
        return self.kstatus

    def ensure(self) -> Binaries:
        """Return the binaries, building whatever is missing."""
        b = self.binaries()
        if not all(os.access(p, os.X_OK) for p in (b.etcd,)):
            self._build_etcd()
        if not all(os.access(p, os.X_OK) for p in (b.kube_apiserver, b.kube_controller_manager, b.kubectl)):
            self._build_kubernetes()
        return b

    # -- internals -------------------------------------------------------------------------

    def _go_env(self) -> Mapping[str, str]:
        env = dict(os.environ)
        env.update(CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
        return env

    def _go(self, args: list[str], cwd: Path, log_name: str) -> None:
        go = shutil.which("go")
        if go is None:
            raise ControlPlaneError("the Go toolchain (`go`) is not on PATH; it is needed to build the control plane")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / log_name
        log.info("running go %s in %s (log: %s)", " ".join(args), cwd, log_path)
        with log_path.open("ab") as out:
            out.write(f"\n$ go {' '.join(args)}\n".encode())
            out.flush()
            proc = subprocess.run([go, *args], cwd=cwd, env=self._go_env(), stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise ControlPlaneError(
                f"`go {' '.join(args[:2])}` failed with exit code {proc.returncode}; log: {log_path}\n"
                + "\n".join(tail)
            )

    def _module_info(self, module: str, cwd: Path, log_name: str) -> dict[str, str]:
        go = shutil.which("go") or "go"
        proc = subprocess.run(
            [go, "mod", "download", "-json", module],
            cwd=cwd,
            env=self._go_env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ControlPlaneError(f"cannot download {module}: {proc.stderr.strip() or proc.stdout.strip()}")
        info: dict[str, str] = json.loads(proc.stdout)
        return info

    def _build_etcd(self) -> None:
        mod_dir = self.work_dir / f"etcd-{ETCD_VERSION}"
        mod_dir.mkdir(parents=True, exist_ok=True)
        (mod_dir / "go.mod").write_text(
            f"module credward.dev/etcdbuild\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
        )
        (mod_dir / "main.go").write_text(
            "// Command etcd is etcd's own main, built from the pinned server module.\n"
            "package main\n\n"
            'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n"
        )
        self._go(["mod", "tidy"], mod_dir, "build-etcd.log")
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self._go(["build", "-trimpath", "-o", str(self.bin_dir / "etcd"), "."], mod_dir, "build-etcd.log")

    def _build_kubernetes(self) -> None:
        mod_dir = self.work_dir / f"kubernetes-{KUBERNETES_VERSION}"
        mod_dir.mkdir(parents=True, exist_ok=True)
        info = self._module_info(f"k8s.io/kubernetes@{KUBERNETES_VERSION}", mod_dir, "build-kubernetes.log")
        upstream = Path(info["GoMod"]).read_text()
        staging = staging_modules(upstream)
        if not staging:
            raise ControlPlaneError(f"no staging replace lines found in k8s.io/kubernetes@{KUBERNETES_VERSION} go.mod")
        go_directive = re.search(r"^go (\S+)", upstream, re.MULTILINE)
        packages = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS]
        (mod_dir / "go.mod").write_text(
            kubernetes_wrapper_gomod(KUBERNETES_VERSION, staging, go_directive.group(1) if go_directive else "1.25.0")
        )
        (mod_dir / "tools.go").write_text(_tools_go(packages))
        self._go(["mod", "tidy"], mod_dir, "build-kubernetes.log")
        minor = KUBERNETES_VERSION.split(".")[1]
        ldflags = " ".join(
            f"-X {pkg}.{k}={v}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for k, v in (("gitVersion", KUBERNETES_VERSION), ("gitMajor", "1"), ("gitMinor", minor))
        )
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self._go(
            ["build", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o", str(self.bin_dir) + "/", *packages],
            mod_dir,
            "build-kubernetes.log",
        )

    def _build_kstatus(self) -> None:
        mod_dir = self.work_dir / f"kstatus-{CLI_UTILS_VERSION}"
        mod_dir.mkdir(parents=True, exist_ok=True)
        (mod_dir / "go.mod").write_text(kstatus_wrapper_gomod(CLI_UTILS_VERSION, KUBERNETES_VERSION))
        (mod_dir / "main.go").write_text(_KSTATUS_MAIN)
        self._go(["mod", "tidy"], mod_dir, "build-kstatus.log")
        self.kstatus_dir.mkdir(parents=True, exist_ok=True)
        self._go(
            ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(self.kstatus), "."], mod_dir, "build-kstatus.log"
        )

    def _build_helm(self) -> None:
        mod_dir = self.work_dir / f"helm-{HELM_VERSION}"
        mod_dir.mkdir(parents=True, exist_ok=True)
        command = f"{HELM_MODULE}/cmd/helm"
        (mod_dir / "go.mod").write_text(
            f"module credward.dev/helmbuild\n\ngo 1.26.0\n\nrequire {HELM_MODULE} {HELM_VERSION}\n"
        )
        (mod_dir / "tools.go").write_text(_tools_go([command]))
        self._go(["mod", "tidy"], mod_dir, "build-helm.log")
        client_go = self._module_info("k8s.io/client-go", mod_dir, "build-helm.log")["Version"]
        self.helm.parent.mkdir(parents=True, exist_ok=True)
        self._go(
            ["build", "-trimpath", "-ldflags", helm_ldflags(HELM_VERSION, client_go), "-o", str(self.helm), command],
            mod_dir,
            "build-helm.log",
        )

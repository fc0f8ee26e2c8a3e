"""``credward dev``: build, start and demo a local control plane with credward on it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from credward.devcluster.build import CLI_UTILS_VERSION, HELM_MODULE, HELM_VERSION, Builder
from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.plane import ControlPlane

log = logging.getLogger("credward.dev")

REPO_ROOT = Path.cwd()


def register(sub: Any) -> None:
    dev = sub.add_parser("dev", help="a local Kubernetes control plane for development and tests")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    build = dev_sub.add_parser(
        "build", help="build (once; cached) etcd, kube-apiserver, kube-controller-manager, kubectl, kstatus and helm"
    )
    build.set_defaults(func=_build)
    up = dev_sub.add_parser("up", help="start the control plane with credward's CRDs and wait (Ctrl-C stops it)")
    up.add_argument("--state-dir", type=Path, default=Path(".credward/dev"))
    up.set_defaults(func=_up)
    demo = dev_sub.add_parser("demo", help="control plane + operator + security service + example credential + token")
    demo.add_argument("--state-dir", type=Path, default=Path(".credward/demo"))
    demo.add_argument("--keep", action="store_true", help="keep everything running after the demo until Ctrl-C")
    demo.set_defaults(func=_demo)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def _build(args: argparse.Namespace) -> int:
    _logging()
    builder = Builder()
    try:
        _timed("control-plane binaries", builder.is_built(), lambda: builder.ensure().kube_apiserver.parent)
        _timed(
            f"kstatus (sigs.k8s.io/cli-utils {CLI_UTILS_VERSION})", builder.kstatus_is_built(), builder.ensure_kstatus
        )
        _timed(f"helm ({HELM_MODULE} {HELM_VERSION})", builder.helm_is_built(), builder.ensure_helm)
    except ControlPlaneError as exc:
        log.error("%s", exc)
        return 1
    return 0


def _timed(what: str, cached: bool, build: Callable[[], Path]) -> None:
    started = time.monotonic()
    where = build()
    how = "cached" if cached else f"built in {time.monotonic() - started:.0f}s"
    log.info("%s %s: %s", what, how, where)


def _wait_forever() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _up(args: argparse.Namespace) -> int:
    _logging()
    try:
        with ControlPlane(args.state_dir) as plane:
            plane.install_crds(REPO_ROOT / "crds")
            print(f"\ncontrol plane ready at {plane.server}\n  export KUBECONFIG={plane.kubeconfig}\n(Ctrl-C stops it)")
            _wait_forever()
    except ControlPlaneError as exc:
        log.error("%s", exc)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    _logging()
    from credward.devcluster.demo import run_demo

    try:
        return run_demo(args.state_dir, REPO_ROOT, keep=args.keep, wait_forever=_wait_forever)
    except ControlPlaneError as exc:
        log.error("%s", exc)
        return 1

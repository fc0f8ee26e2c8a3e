"""``credward operator run``: start the kopf operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from credward.operator import faults
from credward.operator.settings import OperatorSettings, SettingsError
from credward.webhook import WebhookSettings, WebhookSettingsError


def register(sub: Any) -> None:
    op = sub.add_parser("operator", help="the Kubernetes operator")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    run = op_sub.add_parser(
        "run", help="reconcile ServiceAccountCredentials and RoleBindings into Secrets and the security service"
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", help="watch only this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--security-base-url", help="base URL of the security service (env CREDWARD_SECURITY_BASE_URL)")
    run.add_argument("--issuer", help="issuer written into Secrets (env CREDWARD_ISSUER; default: the base URL)")
    run.add_argument(
        "--hash-key-file", help="file with the secret-hash key, shared with the service (env CREDWARD_HASH_KEY_FILE)"
    )
    run.add_argument(
        "--security-token-file",
        dest="token_file",
        help="bearer token for the admin API, re-read when it changes "
        "(env CREDWARD_SECURITY_TOKEN_FILE; default: the Pod's ServiceAccount token)",
    )
    run.add_argument("--resync", help="how often every credential is checked even without events (env CREDWARD_RESYNC)")
    run.add_argument(
        "--cleanup-timeout",
        help="how long deletion waits to remove an account from an unreachable service (env CREDWARD_CLEANUP_TIMEOUT)",
    )
    run.add_argument("--liveness-port", type=int, help="serve /healthz and /metrics on 0.0.0.0:PORT")
    run.add_argument(
        "--webhook-port", type=int, help="serve the admission webhook on this HTTPS port (env CREDWARD_WEBHOOK_PORT)"
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The Kubernetes client logs whole response bodies at DEBUG, Secret data included: never below INFO.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    # httpx logs each request line at INFO and more at DEBUG; the admin API's bodies carry secret hashes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        settings = OperatorSettings.from_env(
            security_base_url=args.security_base_url,
            issuer=args.issuer,
            hash_key_file=args.hash_key_file,
            token_file=args.token_file,
            namespaces=tuple(args.namespaces or ()),
            resync=args.resync,
            cleanup_timeout=args.cleanup_timeout,
            liveness_port=args.liveness_port,
        )
        webhook = WebhookSettings.from_env(port=args.webhook_port, security_base_url=settings.security_base_url)
    except (SettingsError, WebhookSettingsError) as exc:
        logging.getLogger("credward").error("invalid configuration: %s", exc)
        return 2
    fault = faults.misconfigured()
    if fault is not None:
        logging.getLogger("credward").error("invalid configuration: %s", fault)
        return 2
    from kopf._core.engines.activities import ActivityError

    try:
        asyncio.run(run_operator(settings, webhook=webhook))
    except ActivityError as exc:  # a startup step failed for good, e.g. a malformed shared Secret (already logged)
        causes = "; ".join(str(o.exception) for o in exc.outcomes.values() if o.exception is not None)
        logging.getLogger("credward").error("cannot start: %s", causes or exc)
        return 2
    return 0


async def run_operator(
    settings: OperatorSettings, stop_flag: asyncio.Event | None = None, webhook: WebhookSettings | None = None
) -> None:
    """Run until ``stop_flag`` is set (or SIGINT/SIGTERM)."""
    import kopf

    from credward.operator.handlers import build_registry

    # /healthz is served beside /metrics by credward (see handlers.startup), not by kopf.
    await kopf.operator(
        registry=build_registry(settings, webhook),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        stop_flag=stop_flag,
    )

"""``credward operator run``: start the kopf operator."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from credward.operator.settings import OperatorSettings, SettingsError
from credward.webhook import WebhookSettings, WebhookSettingsError


def register(sub: Any) -> None:
    op = sub.add_parser("operator", help="the Kubernetes operator")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    run = op_sub.add_parser("run", help="reconcile ServiceAccountCredentials into Secrets")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", help="watch only this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--security-base-url", help="base URL of the security service (env CREDWARD_SECURITY_BASE_URL)")
    run.add_argument("--issuer", help="issuer written into Secrets (env CREDWARD_ISSUER; default: the base URL)")
    run.add_argument("--resync", help="how often every credential is checked even without events (env CREDWARD_RESYNC)")
    run.add_argument("--liveness-port", type=int, help="serve /healthz on 127.0.0.1:PORT and 0.0.0.0 in a cluster")
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
    try:
        settings = OperatorSettings.from_env(
            security_base_url=args.security_base_url,
            issuer=args.issuer,
            namespaces=tuple(args.namespaces or ()),
            resync=args.resync,
            liveness_port=args.liveness_port,
        )
        webhook = WebhookSettings.from_env(port=args.webhook_port, security_base_url=settings.security_base_url)
    except (SettingsError, WebhookSettingsError) as exc:
        logging.getLogger("credward").error("invalid configuration: %s", exc)
        return 2
    asyncio.run(run_operator(settings, webhook=webhook))
    return 0


async def run_operator(
    settings: OperatorSettings, stop_flag: asyncio.Event | None = None, webhook: WebhookSettings | None = None
) -> None:
    """Run until ``stop_flag`` is set (or SIGINT/SIGTERM)."""
    import kopf

    from credward.operator.handlers import build_registry

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    await kopf.operator(
        registry=build_registry(settings, webhook),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
    )

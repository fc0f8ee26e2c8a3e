"""``python -m credward.webhook``: the webhook alone, configured by ``CREDWARD_WEBHOOK_*`` like the operator's.

For running the webhook as its own Deployment, for tests that need it without the
operator's reconcile loop, and for the benchmark. Stops on SIGTERM or SIGINT;
``--remove-configurations`` deletes its webhook configurations on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from credward.webhook.runtime import WebhookRuntime
from credward.webhook.settings import WebhookSettings, WebhookSettingsError


async def _serve(settings: WebhookSettings, remove: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await WebhookRuntime.start_from_settings(settings)
    try:
        await stop.wait()
    finally:
        await runtime.stop(remove_configurations=remove)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m credward.webhook", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="HTTPS port (env CREDWARD_WEBHOOK_PORT)")
    parser.add_argument("--remove-configurations", action="store_true", help="delete the configurations on exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)  # it logs whole bodies, Secret data included
    try:
        settings = WebhookSettings.from_env(port=args.port)
    except WebhookSettingsError as exc:
        logging.getLogger("credward").error("invalid configuration: %s", exc)
        return 2
    if settings is None:
        logging.getLogger("credward").error("invalid configuration: CREDWARD_WEBHOOK_PORT (or --port) is required")
        return 2
    asyncio.run(_serve(settings, args.remove_configurations))
    return 0


if __name__ == "__main__":
    sys.exit(main())

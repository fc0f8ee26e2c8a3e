"""Run the ASGI app under the configured HTTP server, with the limits of :mod:`credward.security.settings`.

granian is the server credward ships (docs/http-server.md says why, with the
measurements). uvicorn and hypercorn are kept runnable only so that
``make bench`` can measure the choice again on the same machine; they do not
enforce every limit (no header-read timeout in uvicorn, for one).

Every server gets the app wrapped in :class:`~credward.security.limits.LimitedApp`
and stops on SIGTERM or SIGINT: the streams are ended, in-flight requests get
``shutdown_timeout`` to finish, then the ASGI lifespan closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from credward.security.limits import ASGIApp, HttpLimits, LimitedApp
from credward.security.settings import HttpServerKind, Settings

log = logging.getLogger(__name__)


def limits_of(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_headers=settings.max_headers,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        max_concurrency=settings.max_concurrency,
    )


async def run(app: ASGIApp, settings: Settings) -> None:
    limited = LimitedApp(app, limits_of(settings))
    runner = {
        HttpServerKind.GRANIAN: _granian,
        HttpServerKind.UVICORN: _uvicorn,
        HttpServerKind.HYPERCORN: _hypercorn,
    }[settings.http_server]
    await runner(limited, settings)


def _on_stop_signal(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


# granian's Python logger; routed to credward's handlers (stderr), never to stdout, which carries the audit log.
_GRANIAN_LOGGING = {
    "handlers": {},
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}


async def _granian(app: LimitedApp, settings: Settings) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,  # no cleartext HTTP/2: nothing needs it, and it is more surface to limit
        websockets=False,
        backlog=settings.backlog,
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.header_timeout * 1000)),
            keep_alive=settings.keep_alive,
            max_buffer_size=settings.max_header_bytes,
        ),
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=_GRANIAN_LOGGING,
        log_access=False,
    )

    def stop() -> None:
        app.stop(settings.shutdown_timeout)
        server.stop()  # type: ignore[no-untyped-call]  # granian is typed, but not this method

    _on_stop_signal(stop)
    await server.serve()


async def _uvicorn(app: LimitedApp, settings: Settings) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # throttling keys on the TCP peer; no forwarded headers are trusted
        backlog=settings.backlog,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=max(1, round(settings.header_timeout)),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
    )
    await uvicorn.Server(config).serve()  # its own SIGTERM handling: streams run until the graceful timeout


async def _hypercorn(app: LimitedApp, settings: Settings) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
    config.backlog = settings.backlog
    config.keep_alive_timeout = settings.header_timeout
    config.read_timeout = round(settings.header_timeout)
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.graceful_timeout = settings.shutdown_timeout
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = log
    stopped = asyncio.Event()

    def stop() -> None:
        app.stop(settings.shutdown_timeout)
        stopped.set()

    _on_stop_signal(stop)
    await serve(app, config, shutdown_trigger=stopped.wait)  # type: ignore[arg-type]

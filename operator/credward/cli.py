"""The ``credward`` command.

Subcommands are registered by the package that implements them, so that this
module stays a thin dispatcher::

    credward operator run        the kopf operator
    credward security serve      the security service
    credward dev up|down|demo|build   a local control plane for development and tests
    credward token               an access token from the environment's credentials
    credward decode <token>      a token's header and claims, unverified
    credward validate --verb V --path P <token>   verify against the issuer, check one permission
    credward status <name>       a credential in Kubernetes beside the security service's view
    credward rotate [--now] <name>   ask the operator to rotate a credential's secret (--now: no overlap)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# Each module exposes ``register(subparsers)``; registered parsers set ``func``.
_COMMAND_MODULES = {
    "operator": "credward.operator.cli",
    "security": "credward.security.cli",
    "dev": "credward.devcluster.cli",
    "client": "credward.client.cli",  # token, decode, validate, status, rotate
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="credward", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"credward {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in _COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
        del name
    return parser


def _version() -> str:
    from credward import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``sae-router`` console script: the ML commands of :mod:`router_models.cli` plus ``serve`` (the gateway)
and ``worker`` (the feature worker).

The gateway's commands live here so that the dependency points one way: ``service`` imports
``router_models``, never the reverse. Run ``sae-router --help`` for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from router_models.cli import build_parser, parse, run

__all__ = ["main"]


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    for name, what in (("serve", "the gateway"), ("worker", "the feature worker (batched backbone + SAE scoring)")):
        p = sub.add_parser(
            name,
            help=f"run {what}",
            description=f"Run {what}. Settings come from the YAML file given by --config (or named by "
            "$SAE_ROUTER_CONFIG), overridden by SAE_ROUTER_* environment variables (nested with __).",
        )
        p.add_argument("--config", type=Path, default=None, help="YAML config file (default: $SAE_ROUTER_CONFIG)")
        p.add_argument("--host", default=None, help="bind address (overrides the config)")
        p.add_argument("--port", type=int, default=None, help="port (overrides the config)")


def run_serve(args: argparse.Namespace) -> int:
    if args.config is not None and not args.config.is_file():
        raise FileNotFoundError(f"--config {args.config}: no such file")
    from pydantic import ValidationError

    from service.core.config import Settings

    overrides: dict[str, object] = {}
    host_key, port_key = ("host", "port") if args.command == "serve" else ("worker_host", "worker_port")
    if args.host is not None:
        overrides[host_key] = args.host
    if args.port is not None:
        overrides[port_key] = args.port
    try:
        settings = Settings.load(args.config, **overrides)
    except ValidationError as exc:
        raise ValueError(f"invalid configuration: {exc}") from None
    if args.command == "serve":
        from service.main import serve

        serve(settings)
    else:
        from service.worker_app import serve_worker

        serve_worker(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
    add_serve_commands(sub)
    return run(parser, parse(parser, argv), {"serve": run_serve, "worker": run_serve})


if __name__ == "__main__":
    raise SystemExit(main())

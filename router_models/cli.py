"""The ``sae-router`` command line. Each command is a thin wrapper over one library function.

Run ``sae-router --help`` (or ``sae-router <command> --help``) for every option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from router_models.harness import ROUTERS, EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "eval",
        help="fit routers on a dataset's train split and score them on its test split",
        description="Writes report.json, report.md and curve.png (quality vs cost) into --out.",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset file: .parquet, .jsonl, .csv or RouterBench .pkl")
    p.add_argument(
        "--routers",
        default="knn,dense,task_oracle",
        help=f"comma-separated routers to compare (available: {', '.join(ROUTERS)})",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--backbone", default=d.backbone, help="backbone for dense features: packaged name, path or hub id")
    p.add_argument("--layer", type=int, default=d.layer, help="hidden layer to pool (0-based block index; -1 = last)")
    p.add_argument("--pooling", choices=("mean", "max", "last"), default=d.pooling, help="pooling over prompt tokens")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="prompt tokens kept (head + tail)")
    p.add_argument("--head-tokens", type=int, default=d.head_tokens, help="of those, tokens kept from the start")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per backbone forward pass")
    p.add_argument(
        "--sae",
        default=None,
        help="SAE folder (from train-sae): enables sae_probe / sae_knn; "
        "dense features then come from the same backbone and layer",
    )
    p.add_argument("--max-train", type=int, default=None, help="subsample train prompts (stable hash)")
    p.add_argument("--max-test", type=int, default=None, help="subsample test prompts (stable hash)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_eval(args: argparse.Namespace) -> int:
    from router_models.harness import EvalConfig, run_eval

    cfg = EvalConfig(
        backbone=args.backbone,
        layer=args.layer,
        pooling=args.pooling,
        max_tokens=args.max_tokens,
        head_tokens=args.head_tokens,
        batch_size=args.batch_size,
        sae=args.sae,
        max_train=args.max_train,
        max_test=args.max_test,
        progress=not args.no_progress,
    )
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    paths = run_eval(args.data, routers, args.out, cfg)
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _add_train_sae(sub: argparse._SubParsersAction) -> None:
    import dataclasses

    from router_models.train_sae import SAEJob

    p = sub.add_parser(
        "train-sae",
        help="train a TopK SAE (or RouteSAE) on the backbone's activations over routing prompts",
        description="Writes the SAE, sae_router.json (metrics: NMSE, explained variance, L0, dead latents, "
        "downstream KL) and labels.json (feature labels) into --out.",
    )
    docs = _field_docs(SAEJob)
    for f in dataclasses.fields(SAEJob):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            p.add_argument(flag, nargs="*", default=[], help=docs.get(f.name))
        elif f.name == "out":
            p.add_argument(flag, required=True, help=docs.get(f.name))
        else:
            kind = int if f.type in ("int", "int | None") else str
            p.add_argument(flag, type=kind, default=f.default, help=docs.get(f.name))


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string right after each field) of a dataclass, for --help."""
    import ast
    import inspect
    import itertools
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in itertools.pairwise(body):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value).replace("%", "%%")  # type: ignore[union-attr]
    return docs


def _run_train_sae(args: argparse.Namespace) -> int:
    import json

    from router_models.train_sae import SAEJob, run_job

    job = SAEJob(**{k: v for k, v in vars(args).items() if k in SAEJob.__dataclass_fields__})
    meta = run_job(job)
    print(json.dumps(meta["metrics"], indent=2))
    print(f"wrote {job.out}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    for name, what in (("serve", "the gateway"), ("worker", "the feature worker (batched backbone + SAE scoring)")):
        p = sub.add_parser(
            name,
            help=f"run {what}",
            description=f"Run {what}. Settings come from the YAML file named by --config (or $SAE_ROUTER_CONFIG), "
            "overridden by SAE_ROUTER_* environment variables (nested with __).",
        )
        p.add_argument("--config", type=Path, default=None, help="YAML config (sets $SAE_ROUTER_CONFIG)")
        p.add_argument("--host", default=None, help="bind address (overrides the config)")
        p.add_argument("--port", type=int, default=None, help="port (overrides the config)")


def _run_serve(args: argparse.Namespace) -> int:
    import os

    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        os.environ["SAE_ROUTER_CONFIG"] = str(args.config)
    from pydantic import ValidationError

    from service.core.config import Settings

    overrides: dict[str, object] = {}
    host_key, port_key = ("host", "port") if args.command == "serve" else ("worker_host", "worker_port")
    if args.host is not None:
        overrides[host_key] = args.host
    if args.port is not None:
        overrides[port_key] = args.port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
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
    parser = argparse.ArgumentParser(prog="sae-router", description="SAE-feature LLM router: evaluate, train, serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_eval(sub)
    _add_train_sae(sub)
    _add_serve(sub)
    args = parser.parse_args(argv)
    from router_models.data import DatasetError

    try:
        if args.command == "eval":
            return _run_eval(args)
        if args.command == "train-sae":
            return _run_train_sae(args)
        if args.command in ("serve", "worker"):
            return _run_serve(args)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"sae-router {args.command}: error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

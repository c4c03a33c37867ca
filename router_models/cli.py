"""The ``sae-router`` command line. Each command is a thin wrapper over one library function.

Run ``sae-router --help`` (or ``sae-router <command> --help``) for every option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

# The extra (pyproject.toml, [project.optional-dependencies]) that installs each module a command may miss:
# `pip install sae-router[serve]` runs the gateway and the worker, `[train]` the training and evaluation commands.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("sae_lens", "sklearn", "pandas", "pyarrow", "matplotlib"), "train"),
    **dict.fromkeys(
        (
            "fastapi",
            "starlette",
            "uvicorn",
            "pydantic",
            "pydantic_settings",
            "yaml",
            "redis",
            "httpx",
            "prometheus_client",
        ),
        "serve",
    ),
}


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from router_models.harness import ROUTERS, EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "eval",
        help="fit routers on a dataset's train split and score them on its test split",
        description="Writes report.json, report.md and curve.png (quality vs cost) into --out.",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset file: .parquet, .jsonl, .csv or RouterBench .pkl")
    p.add_argument("--artifact", type=Path, default=None, help="evaluate this trained router as it is (no refitting)")
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

    if args.artifact is not None:
        from router_models.report import write_report
        from router_models.train_router import evaluate_artifact

        report = evaluate_artifact(args.artifact, args.data, args.max_test, progress=not args.no_progress)
        return _print_report(write_report(report, args.out))

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
    return _print_report(run_eval(args.data, routers, args.out, cfg))


def _print_report(paths: dict[str, Path]) -> int:
    """Print the written report.md and where the report files went; the command's exit status (0)."""
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


def _add_router_commands(sub: argparse._SubParsersAction) -> None:
    from router_models.artifact import DEFAULT_ARTIFACT

    p = sub.add_parser(
        "train",
        help="train a router artifact (features, scorer selection, calibration, presets, test report)",
        description="Cross-fits every candidate scorer on the train split (5 folds), keeps the best by "
        "cross-validated routing AUC (a greedy ensemble of candidates included), calibrates and sets presets on "
        "the out-of-fold predictions, evaluates on test against baselines fitted in the same run, and writes "
        "the router directory to --out.",
    )
    p.add_argument("--data", nargs="+", required=True, help="dataset file(s); several are combined")
    p.add_argument("--sae", required=True, help="SAE folder from `sae-router train-sae`")
    p.add_argument("--out", required=True, help="router directory to write")
    p.add_argument("--models", default="", help="comma-separated model pool (default: all)")
    p.add_argument("--complete-models", action="store_true", help="keep only models scored on every prompt")
    p.add_argument("--prices", default=None, help="prices.json (dataset -> model -> $/Mtok in/out)")
    p.add_argument("--max-train", type=int, default=None, help="subsample train prompts (stable hash)")
    p.add_argument("--max-test", type=int, default=None, help="subsample test prompts (stable hash)")
    p.add_argument("--max-tokens", type=int, default=128, help="prompt tokens kept (head + tail)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    p = sub.add_parser("route", help="route one prompt with a trained router and explain the decision (JSON)")
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="router directory (default: bundled)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=float, default=None, help="cost weight λ ≥ 0 (USD⁻¹)")
    g.add_argument("--preset", default=None, help="named preset stored in the artifact (default: 'default')")
    p.add_argument("--models", default="", help="comma-separated allowed models")
    p.add_argument("--max-cost", type=float, default=None, help="max predicted USD per request")
    p.add_argument("--min-quality", type=float, default=None, help="min predicted quality")

    p = sub.add_parser(
        "calibrate",
        help="recompute the artifact's presets (λ per target) on a labelled dataset's train split",
        description="Targets: NAME=quality_share:0.95 (>= 95%% of the best single model's quality at least cost), "
        "NAME=cost_share:0.3 (best quality at <= 30%% of its cost), NAME=model_share:0.2:MODEL (<= 20%% of calls "
        "to MODEL), NAME=lambda:0.5 (fixed).",
    )
    p.add_argument("--artifact", type=Path, required=True, help="router directory (rewritten in place)")
    p.add_argument("--data", required=True, help="labelled dataset with the router's models")
    p.add_argument("--target", action="append", default=[], help="preset target (repeatable); default: the usual")
    p.add_argument("--default", default="balanced", help="preset used when a request names none")
    p.add_argument("--max-prompts", type=int, default=1000, help="train prompts used (stable hash)")

    p = sub.add_parser(
        "verify",
        help="re-check a trained router under the installed libraries (its recorded check.json)",
        description="Recomputes the router's predictions and decisions on the prompts recorded in its check.json "
        "and compares them with what the libraries that built it produced; exit status 1 when they drifted past "
        "the tolerance. Run it after any upgrade of torch, transformers or sae-lens. --record writes check.json "
        "instead (from --data's test split plus a few prompts of other kinds).",
    )
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="router directory (default: bundled)")
    p.add_argument("--record", action="store_true", help="write check.json from the installed libraries")
    p.add_argument("--data", default=None, help="with --record: dataset whose test prompts are recorded")
    p.add_argument("--n", type=int, default=32, help="with --record: test prompts recorded")

    p = sub.add_parser("onboard", help="add a model to a trained router from its results on a few hundred prompts")
    p.add_argument("--artifact", type=Path, required=True, help="router directory")
    p.add_argument("--model", required=True, help="name of the new model")
    p.add_argument("--scores", required=True, help="dataset file with the new model's results (canonical schema)")
    p.add_argument("--price", nargs=2, type=float, metavar=("IN", "OUT"), required=True, help="USD per Mtok")
    p.add_argument("--out", type=Path, default=None, help="write here instead of rewriting --artifact")


def _run_train(args: argparse.Namespace) -> int:
    from router_models.train_router import TrainConfig, train_router

    cfg = TrainConfig(
        data=args.data,
        sae=args.sae,
        out=args.out,
        models=[m for m in args.models.split(",") if m],
        complete_models=args.complete_models,
        prices=args.prices,
        max_train=args.max_train,
        max_test=args.max_test,
        max_tokens=args.max_tokens,
        overwrite=args.overwrite,
    )
    _, report = train_router(cfg)
    from router_models.report import markdown_table, write_report

    write_report(report, Path(args.out) / "report")
    from router_models.artifact import load_router
    from router_models.verify import check_prompts, record_check

    record_check(load_router(args.out), args.out, check_prompts(args.data[0]))
    print(markdown_table(report))
    print(f"selected: {report['selected']}; wrote {args.out}")
    return 0


def _run_route(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact import load_router
    from router_models.engine import Constraints

    router = load_router(args.artifact)
    allowed = tuple(m for m in args.models.split(",") if m) or None
    constraints = Constraints(allowed=allowed, max_cost=args.max_cost, min_quality=args.min_quality)
    choice = args.lam if args.lam is not None else (args.preset or "default")
    decision = router.decide(args.prompt, choice, constraints, explain=True)
    print(json.dumps({"router_version": router.version, **decision.to_json()}, indent=2))
    return 0


def _parse_target(text: str) -> tuple[str, object]:
    from router_models.calibration import PresetTarget

    try:
        name, spec = text.split("=", 1)
        kind, value, *rest = spec.split(":")
        return name, PresetTarget(kind, float(value), rest[0] if rest else None)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"--target {text!r}: expected NAME=KIND:VALUE[:MODEL]") from None


def _run_calibrate(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact import load_router, save_router
    from router_models.calibration import DEFAULT_PRESETS, fit_presets
    from router_models.data import load_dataset
    from router_models.harness import subsample
    from router_models.train_router import artifact_features

    router = load_router(args.artifact, load_backbone=False)
    ds = subsample(load_dataset(args.data), args.max_prompts, 0).split("train")
    ds = ds.select_models(router.models)
    texts = [str(p) for p in ds.prompts]
    q, c = router.predict(artifact_features(router, args.artifact, texts), texts)
    targets = dict(_parse_target(t) for t in args.target) or DEFAULT_PRESETS
    router.preset_table = fit_presets(q, c, ds.scores, ds.costs, router.models, targets, args.default)  # type: ignore[arg-type]
    save_router(router, args.artifact, overwrite=True)
    print(json.dumps(router.preset_table, indent=2))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact import load_router
    from router_models.verify import check_prompts, record_check, verify_router

    router = load_router(args.artifact)
    if args.record:
        if args.data is None:
            raise ValueError("--record needs --data (the dataset whose test prompts are recorded)")
        print(f"wrote {record_check(router, args.artifact, check_prompts(args.data, args.n))}")
        return 0
    result = verify_router(router, args.artifact)
    print(json.dumps(result.to_json(), indent=2))
    if not result.ok:
        print(
            f"sae-router verify: {args.artifact} drifted under the installed libraries (max |Δquality| "
            f"{result.max_quality_diff:.4f}, {result.flipped}/{result.decisions} decisions changed): re-run its "
            "evaluation (`sae-router eval --artifact`) and retrain or re-record (`--record`) before serving it",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def _run_onboard(args: argparse.Namespace) -> int:
    from router_models.artifact import load_router, save_router
    from router_models.costs import ModelPrice
    from router_models.data import load_dataset
    from router_models.onboard import onboard
    from router_models.train_router import artifact_features

    router = load_router(args.artifact, load_backbone=False)
    ds = load_dataset(args.scores)
    if args.model not in ds.models:
        raise ValueError(f"{args.scores} has no results for {args.model!r} (models: {list(ds.models)})")
    ds = ds.select_models([args.model])
    texts = [str(p) for p in ds.prompts]
    feats = artifact_features(router, args.artifact, texts)
    price = ModelPrice(args.price[0], args.price[1], None)
    new = onboard(router, args.model, feats, ds.scores[:, 0], texts=texts, costs=ds.costs[:, 0], price=price)
    out = args.out or args.artifact
    save_router(new, out, overwrite=True)
    print(f"onboarded {args.model} from {ds.n_prompts} prompts; router {new.version} written to {out}")
    return 0


def _install_hint(err: ModuleNotFoundError) -> str | None:
    """'pip install ...' for the extra that provides the missing module, or None when no extra does."""
    extra = EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
    return (
        None
        if extra is None
        else f"the '{extra}' extra is not installed (no module {err.name!r}): " + (f"pip install 'sae-router[{extra}]'")
    )


def _add_unavailable(sub: argparse._SubParsersAction, names: tuple[str, ...], err: ModuleNotFoundError) -> None:
    """Stand-in parsers for commands whose modules cannot be imported: running one says what to install."""
    hint = _install_hint(err)
    if hint is None:
        raise err
    for name in names:
        p = sub.add_parser(name, help=f"unavailable: {hint}", add_help=False)
        p.set_defaults(missing=err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae-router", description="SAE-feature LLM router: evaluate, train, serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    builders = (
        (_add_eval, ("eval",)),
        (_add_train_sae, ("train-sae",)),
        (_add_serve, ("serve", "worker")),
        (_add_router_commands, ("train", "route", "calibrate", "onboard", "verify")),
    )
    for add, names in builders:
        try:
            add(sub)
        except ModuleNotFoundError as err:  # a builder imports its command's module (defaults, help)
            _add_unavailable(sub, names, err)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    missing: ModuleNotFoundError | None = getattr(args, "missing", None)
    if missing is None and unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {
        "eval": _run_eval,
        "train-sae": _run_train_sae,
        "serve": _run_serve,
        "worker": _run_serve,
        "train": _run_train,
        "route": _run_route,
        "calibrate": _run_calibrate,
        "onboard": _run_onboard,
        "verify": _run_verify,
    }
    try:
        if missing is not None:
            raise missing
        return handlers[args.command](args)
    except ModuleNotFoundError as exc:
        hint = _install_hint(exc)
        if hint is None:
            raise
        print(f"sae-router {args.command}: {hint}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:  # DatasetError is a ValueError
        print(f"sae-router {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

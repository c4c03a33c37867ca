"""The ``sae-router`` command line's ML commands. Each command is a thin wrapper over one library function.

The console script is :func:`service.cli.main`, which adds the gateway's ``serve`` and ``worker`` (this package
never imports ``service``). Run ``sae-router --help`` (or ``sae-router <command> --help``) for every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["add_options", "build_parser", "field_docs", "main", "options_to_config", "run"]

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

C = TypeVar("C")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from router_models.evaluate.harness import EvalConfig, harness_routers

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
        help=f"comma-separated routers to compare (available: {', '.join(harness_routers())})",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    add_options(p, EvalConfig, skip=("extra",))


def _run_eval(args: argparse.Namespace) -> int:
    from router_models.evaluate.harness import EvalConfig, run_eval

    if args.artifact is not None:
        from router_models.evaluate.report import write_report
        from router_models.train.router import evaluate_artifact

        report = evaluate_artifact(args.artifact, args.data, args.max_test, progress=args.progress, cache=args.cache)
        return _print_report(write_report(report, args.out))

    cfg = options_to_config(EvalConfig, args)
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    return _print_report(run_eval(args.data, routers, args.out, cfg))


def _add_loto(sub: argparse._SubParsersAction) -> None:
    from router_models.evaluate.loto import LotoConfig

    p = sub.add_parser(
        "loto",
        help="leave-one-task-out: train on every task family but one, test on all of that family's prompts",
        description="For each held-out task family, fits the served pipeline (selection, ensemble, calibration, "
        "presets) and every baseline on the other families' prompts, scores them on the held-out family with one "
        "cost prediction, and writes loto.json and loto.md (AUC with the served router's paired-bootstrap "
        "difference from the best baseline, cost_at_95, peak quality) into --out.",
    )
    add_options(p, LotoConfig)


def _run_loto(args: argparse.Namespace) -> int:
    from router_models.evaluate.loto import LotoConfig, run_loto

    result = run_loto(options_to_config(LotoConfig, args))
    print(result["markdown"])
    print(f"wrote {', '.join(result['paths'])}")
    return 0


def _print_report(paths: dict[str, Path]) -> int:
    """Print the written report.md and where the report files went; the command's exit status (0)."""
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _add_train_sae(sub: argparse._SubParsersAction) -> None:
    from router_models.train.sae import SAEJob

    p = sub.add_parser(
        "train-sae",
        help="train a TopK SAE (or RouteSAE) on the backbone's activations over routing prompts",
        description="Writes the SAE, sae_router.json (metrics: NMSE, explained variance, L0, dead latents, "
        "downstream KL) and labels.json (feature labels) into --out.",
    )
    add_options(p, SAEJob)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string right after each field) of a dataclass and its bases, for --help."""
    import ast
    import inspect
    import itertools
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for a, b in itertools.pairwise(body):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split()).replace("%", "%%")  # type: ignore[union-attr]
    return docs


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--flag`` per field of the config dataclass ``cls`` (as EleutherAI/sparsify does): the field's type,
    default and attribute docstring. A field without a default is required; ``bool`` fields are switches
    (``--x`` when the default is False, ``--no-x`` when it is True); ``list[str]`` takes several values or a
    comma-separated one; a ``Literal`` gives the choices."""
    import typing

    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, hint, help_ = "--" + f.name.replace("_", "-"), hints[f.name], docs.get(f.name)
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        required = default is dataclasses.MISSING
        default = None if required else default
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 1 else hint
        if base is bool:
            if default:
                flag, help_ = f"--no-{f.name.replace('_', '-')}", f"turn off: {help_}"
            parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", help=help_)
        elif typing.get_origin(base) is list:
            parser.add_argument(flag, nargs="+" if required else "*", required=required, default=default, help=help_)
        elif typing.get_origin(base) is typing.Literal:
            parser.add_argument(flag, choices=typing.get_args(base), default=default, help=help_)
        else:
            parser.add_argument(flag, type=base, required=required, default=default, help=help_)


def options_to_config(cls: type[C], args: argparse.Namespace) -> C:
    """The config dataclass built from the options :func:`add_options` added (comma-separated lists split)."""
    import typing

    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if typing.get_origin(hints[f.name]) is list and value is not None:
                value = [part for v in value for part in str(v).split(",") if part]
            values[f.name] = value
    return cls(**values)


def _run_train_sae(args: argparse.Namespace) -> int:
    import json

    from router_models.train.sae import SAEJob, run_job

    job = options_to_config(SAEJob, args)
    meta = run_job(job, cache=args.cache)
    print(json.dumps(meta["metrics"], indent=2))
    print(f"wrote {job.out}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from router_models.train.router import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a router artifact (features, scorer selection, calibration, presets, test report)",
        description="Cross-fits every candidate scorer on the train split (5 folds), keeps the best by "
        "cross-validated routing AUC (a greedy ensemble of candidates included), calibrates and sets presets on "
        "the out-of-fold predictions, evaluates on test against baselines fitted in the same run, and writes "
        "the router directory to --out.",
    )
    add_options(p, TrainConfig)


_RUNTIME: dict[str, Any] = {
    "choices": ("torch", "onnx", "auto"),
    "default": "torch",
    "help": "what runs the backbone's blocks (default torch; onnx: exported once to the cache, as the gateway's "
    "feature_runtime 'auto' does on CPU)",
}


def _add_router_commands(sub: argparse._SubParsersAction) -> None:
    from router_models.artifact.format import DEFAULT_ARTIFACT

    p = sub.add_parser("route", help="route one prompt with a trained router and explain the decision (JSON)")
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="router directory (default: bundled)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lambda", dest="lam", type=float, default=None, help="cost weight λ ≥ 0 (USD⁻¹)")
    g.add_argument("--preset", default=None, help="named preset stored in the artifact (default: 'default')")
    p.add_argument("--models", default="", help="comma-separated allowed models")
    p.add_argument("--max-cost", type=float, default=None, help="max predicted USD per request")
    p.add_argument("--min-quality", type=float, default=None, help="min predicted quality")
    p.add_argument("--runtime", **_RUNTIME)

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
    p.add_argument("--runtime", **_RUNTIME)

    p = sub.add_parser("onboard", help="add a model to a trained router from its results on a few hundred prompts")
    p.add_argument("--artifact", type=Path, required=True, help="router directory")
    p.add_argument("--model", required=True, help="name of the new model")
    p.add_argument("--scores", required=True, help="dataset file with the new model's results (canonical schema)")
    p.add_argument("--price", nargs=2, type=float, metavar=("IN", "OUT"), required=True, help="USD per Mtok")
    p.add_argument("--out", type=Path, default=None, help="write here instead of rewriting --artifact")


def _run_train(args: argparse.Namespace) -> int:
    from router_models.train.router import TrainConfig, train_router

    cfg = options_to_config(TrainConfig, args)
    _, report = train_router(cfg)
    from router_models.evaluate.report import markdown_table, write_report

    write_report(report, Path(args.out) / "report")
    from router_models.artifact.load import load_router
    from router_models.evaluate.verify import check_prompts, record_check

    record_check(load_router(args.out, cache=args.cache), args.out, check_prompts(args.data[0]))
    print(markdown_table(report))
    print(f"selected: {report['selected']}; wrote {args.out}")
    return 0


def _run_route(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact.load import load_router
    from router_models.decide.engine import Constraints

    router = load_router(args.artifact, cache=args.cache, runtime=args.runtime)
    allowed = tuple(m for m in args.models.split(",") if m) or None
    constraints = Constraints(allowed=allowed, max_cost=args.max_cost, min_quality=args.min_quality)
    choice = args.lam if args.lam is not None else (args.preset or "default")
    decision = router.decide(args.prompt, choice, constraints, explain=True)
    print(json.dumps({"router_version": router.version, **decision.to_json()}, indent=2))
    return 0


def _parse_target(text: str) -> tuple[str, object]:
    from router_models.train.calibration import PresetTarget

    try:
        name, spec = text.split("=", 1)
        kind, value, *rest = spec.split(":")
        return name, PresetTarget(kind, float(value), rest[0] if rest else None)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"--target {text!r}: expected NAME=KIND:VALUE[:MODEL]") from None


def _run_calibrate(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact.load import load_router
    from router_models.artifact.save import save_router
    from router_models.data import load_dataset, subsample
    from router_models.train.calibration import DEFAULT_PRESETS, fit_presets
    from router_models.train.router import artifact_features

    router = load_router(args.artifact, load_backbone=False)
    ds = subsample(load_dataset(args.data), args.max_prompts, 0).split("train")
    ds = ds.select_models(router.models)
    texts = [str(p) for p in ds.prompts]
    q, c = router.predict(artifact_features(router, args.artifact, texts, cache=args.cache), texts)
    targets = dict(_parse_target(t) for t in args.target) or DEFAULT_PRESETS
    router.preset_table = fit_presets(q, c, ds.scores, ds.costs, router.models, targets, args.default)  # type: ignore[arg-type]
    save_router(router, args.artifact, overwrite=True)
    print(json.dumps(router.preset_table, indent=2))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    import json

    from router_models.artifact.load import load_router
    from router_models.evaluate.verify import check_prompts, record_check, verify_router

    router = load_router(args.artifact, cache=args.cache, runtime=args.runtime)
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
    from router_models.artifact.load import load_router
    from router_models.artifact.save import save_router
    from router_models.data import load_dataset
    from router_models.decide.costs import ModelPrice
    from router_models.train.onboard import onboard
    from router_models.train.router import artifact_features

    router = load_router(args.artifact, load_backbone=False)
    ds = load_dataset(args.scores)
    if args.model not in ds.models:
        raise ValueError(f"{args.scores} has no results for {args.model!r} (models: {list(ds.models)})")
    ds = ds.select_models([args.model])
    texts = [str(p) for p in ds.prompts]
    feats = artifact_features(router, args.artifact, texts, cache=args.cache)
    price = ModelPrice(args.price[0], args.price[1], None)
    new = onboard(router, args.model, feats, ds.scores[:, 0], texts=texts, costs=ds.costs[:, 0], price=price)
    out = args.out or args.artifact
    save_router(new, out, overwrite=True)
    print(f"onboarded {args.model} from {ds.n_prompts} prompts; router {new.version} written to {out}")
    return 0


Handler = Callable[[argparse.Namespace], int]


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


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser of every ML command, and its subparsers (the gateway's CLI adds ``serve`` and ``worker``)."""
    parser = argparse.ArgumentParser(prog="sae-router", description="SAE-feature LLM router: evaluate, train, serve.")
    sub = parser.add_subparsers(dest="command", required=True)
    builders = (
        (_add_eval, ("eval",)),
        (_add_loto, ("loto",)),
        (_add_train_sae, ("train-sae",)),
        (_add_train, ("train",)),
        (_add_router_commands, ("route", "calibrate", "onboard", "verify")),
    )
    for add, names in builders:
        try:
            add(sub)
        except ModuleNotFoundError as err:  # a builder imports its command's module (defaults, help)
            _add_unavailable(sub, names, err)
    for p in sub.choices.values():  # train and eval have it from their config dataclass
        if not any(a.dest == "cache" for a in p._actions):
            p.add_argument("--cache", default=None, help="cache folder (default: $SAE_ROUTER_CACHE, else ~/.cache)")
    return parser, sub


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: Mapping[str, Handler] | None = None) -> int:
    """Run the parsed command (``extra``: more handlers by command name); a bad input exits 2 with its message."""
    handlers: dict[str, Handler] = {
        "eval": _run_eval,
        "loto": _run_loto,
        "train-sae": _run_train_sae,
        "train": _run_train,
        "route": _run_route,
        "calibrate": _run_calibrate,
        "onboard": _run_onboard,
        "verify": _run_verify,
        **(extra or {}),
    }
    if args.command not in handlers:
        parser.error(f"unknown command {args.command}")
    if getattr(args, "cache", False) is None:  # the one place the ML commands read the environment
        from router_models.settings import LibrarySettings

        args.cache = str(LibrarySettings().cache)
    try:
        missing: ModuleNotFoundError | None = getattr(args, "missing", None)
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


def main(argv: list[str] | None = None) -> int:
    """The ML commands alone; the ``sae-router`` console script is :func:`service.cli.main`."""
    parser, _ = build_parser()
    return run(parser, parse(parser, argv))


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a stand-in command (its extra is missing) takes any arguments, to say what to install."""
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "missing", None) is None:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


if __name__ == "__main__":
    raise SystemExit(main())

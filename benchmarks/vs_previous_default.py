"""A new default router's recipe against the previous default router, on tasks the new one never saw.

    git worktree add /tmp/prev 43a4ddd     # any checkout holding the previous artifacts/default-router
    python -m benchmarks.vs_previous_default --previous /tmp/prev/artifacts/default-router \\
        --sae artifacts/sae/minilm-l3 --out runs/vs-previous
    python -m benchmarks.vs_previous_default --previous /tmp/prev/artifacts/default-router \\
        --sae artifacts/sae/minilm-l3 --as-trained ../shared/data/routing/zeroeval_gsm_math.parquet --out runs/vs-prev

For each held-out task family T of the three zeroeval files, the new recipe (``fit_router`` with task-grouped
selection over ``--candidates``, exactly as ``sae-router loto`` fits its served router) is trained on the other
families and scored on T; the previous default is scored **as shipped** (its own backbone, SAE, scorer,
calibration and cost model) on the same prompts. Both choose among the models they share (the previous
default's pool) and each decides with its own cost predictions; the paired bootstrap is the new recipe's AUC
minus the previous default's on the same resampled prompts.

A family the previous default was trained on (``--previous-trained-on``, default gsm8k and math-l5: it was
trained on zeroeval_gsm_math's train split) is scored on that family's **test split only** (prompts it never
saw), and the new recipe still never saw the family at all: there the comparison is deliberately unfair to the
new recipe. Writes ``vs_previous.json`` and ``vs_previous.md`` into --out and prints the table.

``--as-trained FILE`` instead scores both routers as shipped (``--new``, default ``artifacts/default-router``)
on FILE's test split over the previous default's models: the previous default's own ground.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eval_all import write_outputs
from router_models.data import RoutingDataset, load_dataset, task_groups, validation_split
from router_models.evaluate.loto import _as_train, split_rows
from router_models.evaluate.metrics import evaluate_router, paired_bootstrap, random_mixing, reference_points
from router_models.features.pooling import PromptFeatures
from router_models.train.router import combine, load_prices, pick_candidates

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routing"
FILES = ("zeroeval_gsm_math", "zeroeval_mmlu_redux", "zeroeval_zebra")
CANDIDATES = ("knn", "sae_knn", "cluster", "irt", "sae_irt")


def recipe_features(ds: RoutingDataset, sae: str) -> tuple[PromptFeatures, Any]:
    """Every prompt's features under the new recipe's SAE (cached) and their spec; read once per run."""
    from router_models.features.cache import cached_features
    from router_models.features.spec import FeatureSpec

    feats, bcfg, encoder = cached_features(sae, [str(p) for p in ds.prompts], 128, 32, progress=False)
    return feats, FeatureSpec.from_encoder(bcfg, encoder, sae, int(feats.dense.shape[1]))


def new_recipe(
    ds: RoutingDataset, feats: PromptFeatures, spec: Any, held: str, prices: Any, candidates: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str], str, np.ndarray]:
    """(quality, cost) [n_T, m_T] of the new recipe fitted without ``held`` on ``held``'s prompts, the split's
    models, the selected scorer and the held-out rows' mask. ``feats``: rows aligned with ``ds``."""
    from router_models.train.selection import fit_router

    train, test, models = split_rows(ds, held)
    texts = [str(p) for p in ds.prompts]
    tr = _as_train(ds.subset(train).select_models(models))
    router, selection = fit_router(
        feats.rows(np.flatnonzero(train)),
        tr,
        validation_split(tr)[1],
        spec=spec,
        prices=prices,
        candidates=pick_candidates(candidates),
        folds="task",
    )
    test_texts = [texts[i] for i in np.flatnonzero(test)]
    q, c = router.predict(feats.rows(np.flatnonzero(test)), test_texts)
    return q, c, models, str(selection["selected"]), test


def compare(
    ds: RoutingDataset,
    recipe: tuple[PromptFeatures, Any],
    old: Any,
    previous: str,
    held: str,
    prices: Any,
    candidates: list[str],
    saw: bool,
    n_boot: int,
) -> dict[str, Any]:
    """``recipe``: :func:`recipe_features`; ``old``: the previous default loaded from ``previous``."""
    from router_models.train.router import artifact_features

    t0 = time.perf_counter()
    q_new, c_new, models, selected, test = new_recipe(ds, *recipe, held, prices, candidates)
    fit_s = time.perf_counter() - t0
    shared = [m for m in old.models if m in models]
    rows = np.flatnonzero(test)
    keep = np.ones(len(rows), dtype=bool)
    if saw:  # the previous default trained on this family's train split: only its test split is unseen
        keep = np.asarray(ds.splits)[rows] == "test"
    texts = [str(ds.prompts[i]) for i in rows[keep]]
    q_old, c_old = old.predict(artifact_features(old, previous, texts, progress=False), texts)
    i_new = [models.index(m) for m in shared]
    i_old = [list(old.models).index(m) for m in shared]
    cols = [list(ds.models).index(m) for m in shared]
    true_q, true_c = ds.scores[rows[keep]][:, cols], ds.costs[rows[keep]][:, cols]
    refs = reference_points(true_q, true_c, tuple(shared))
    pairs = {
        "new recipe": (q_new[keep][:, i_new], c_new[keep][:, i_new]),
        "previous default": (q_old[:, i_old], c_old[:, i_old]),
    }
    out: dict[str, Any] = {
        "held_out": held,
        "rows": "test split (the previous default trained on this family)" if saw else "every prompt",
        "n_test": int(keep.sum()),
        "models": shared,
        "random_mixing_auc": random_mixing(refs)["auc"],
        "best_single": refs["best_single"].to_json(),
        "new_selected": selected,
        "new_fit_s": round(fit_s, 1),
        "routers": {},
    }
    for name, (q, c) in pairs.items():
        res = evaluate_router(q, c, true_q, true_c, tuple(shared), refs)
        out["routers"][name] = {k: res[k] for k in ("auc", "cost_at_95", "peak_quality")}
    (qa, ca), (qb, cb) = pairs["new recipe"], pairs["previous default"]
    out["delta"] = paired_bootstrap(qa, qb, ca, true_q, true_c, tuple(shared), n_boot=n_boot, pred_c_b=cb)
    return out


def as_trained(new: str, previous: str, data: Path, n_boot: int) -> dict[str, Any]:
    """Both routers as shipped on ``data``'s test split, over the previous default's models (its own ground)."""
    from router_models.artifact.load import load_router
    from router_models.train.router import artifact_features

    ds = load_dataset(data).split("test")
    old = load_router(previous, load_backbone=False)
    ds = ds.select_models([m for m in old.models if m in ds.models])
    ds = ds.subset(~np.isnan(ds.scores).all(axis=1))
    texts = [str(p) for p in ds.prompts]
    preds = {}
    for name, path in (("new default", new), ("previous default", previous)):
        r = old if path == previous else load_router(path, load_backbone=False)
        q, c = r.predict(artifact_features(r, path, texts, progress=False), texts)
        idx = [list(r.models).index(m) for m in ds.models]
        preds[name] = (q[:, idx], c[:, idx])
    models = tuple(ds.models)
    refs = reference_points(ds.scores, ds.costs, models)
    out: dict[str, Any] = {"data": ds.name, "n_test": ds.n_prompts, "models": list(models), "routers": {}}
    for name, (q, c) in preds.items():
        res = evaluate_router(q, c, ds.scores, ds.costs, models, refs)
        out["routers"][name] = {k: res[k] for k in ("auc", "cost_at_95", "peak_quality")}
    (qa, ca), (qb, cb) = preds["new default"], preds["previous default"]
    out["delta"] = paired_bootstrap(qa, qb, ca, ds.scores, ds.costs, models, n_boot=n_boot, pred_c_b=cb)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| held-out task | rows scored | n | models | random mixing | new recipe (never saw the task) | "
        "previous default | new − previous [95% CI] | cost_at_95 new / previous |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, r in results.items():
        new, old, d = r["routers"]["new recipe"], r["routers"]["previous default"], r["delta"]
        lines.append(
            f"| {task} | {r['rows']} | {r['n_test']} | {len(r['models'])} | {r['random_mixing_auc']:.3f} | "
            f"{new['auc']:.3f} · {r['new_selected']} | {old['auc']:.3f} | "
            f"{d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | {new['cost_at_95']:.3f} / {old['cost_at_95']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--previous", required=True, help="the previous default router's directory")
    ap.add_argument("--sae", required=True, help="the new recipe's SAE folder")
    ap.add_argument("--tasks", nargs="*", default=["gsm8k", "math-l5", "mmlu-redux", "zebra-grid"])
    ap.add_argument("--previous-trained-on", nargs="*", default=["gsm8k", "math-l5"])
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument(
        "--as-trained",
        type=Path,
        default=None,
        help="instead: the new default (--new) and the previous one as shipped on this file's test split",
    )
    ap.add_argument("--new", default="artifacts/default-router", help="with --as-trained: the new router")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.as_trained is not None:
        r = as_trained(args.new, args.previous, args.as_trained, args.n_boot)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "as_trained.json").write_text(json.dumps(r, indent=1))
        d = r["delta"]
        print(
            f"{r['data']}: {r['n_test']} test prompts, {len(r['models'])} models; new "
            f"{r['routers']['new default']['auc']:.3f}, previous {r['routers']['previous default']['auc']:.3f}, "
            f"new − previous {d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
        )
        return
    datasets = [load_dataset(SHARED / f"{f}.parquet") for f in FILES]
    ds = combine(datasets)
    unknown = sorted(set(args.tasks) - set(task_groups(ds.tasks)))
    if unknown:
        raise SystemExit(f"unknown task family {unknown}")
    from router_models.artifact.load import load_router

    prices = load_prices(SHARED / "prices.json", [d.name for d in datasets])
    recipe, old = recipe_features(ds, args.sae), load_router(args.previous, load_backbone=False)
    results = {}
    for held in args.tasks:
        saw = held in args.previous_trained_on
        results[held] = compare(ds, recipe, old, args.previous, held, prices, args.candidates, saw, args.n_boot)
        r = results[held]
        print(
            f"  {held:<12} new {r['routers']['new recipe']['auc']:.3f}  previous "
            f"{r['routers']['previous default']['auc']:.3f}  ({r['new_fit_s']:.0f} s)",
            flush=True,
        )
    write_outputs(args.out, "vs_previous", results, markdown(results))


if __name__ == "__main__":
    main()

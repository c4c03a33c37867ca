"""Do the other shared files help a task the router never saw? Leave-one-task-out with and without them.

    python -m benchmarks.loto_extra_files --sae artifacts/sae/minilm-l3 --out runs/loto-extra

The joint item-response scorers (``irt`` on the dense state, ``sae_irt`` on the SAE latents) learn the prompt side
(difficulty and skill loadings read off the features) from every prompt with a result and the model side (one
ability vector per model) from every file a model appears in, so files with other model pools can still teach
the prompt side. For each held-out family T of the three zeroeval files both scorers are fitted twice on the
same features: (a) on the other zeroeval families only (the ``sae-router loto`` setting), (b) on those plus the
other shared files (dcrouter, routerbench_subset, routerdc7; each capped by a stable hash, ``--cap``) with **every
task of T's kind removed from them too** (``EXCLUDE``: gsm8k also drops MGSM, math-l5 drops MATH, mmlu-redux drops
MMLU, zebra-grid drops AgentVerse's logic grids) and every prompt whose text occurs in T dropped. Both are scored
on all of T's prompts over the zeroeval models with a result on each, with the same cost prediction (each
model's mean cost on the zeroeval training rows); the paired bootstrap is (b) minus (a).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eval_all import write_outputs
from router_models.data import RoutingDataset, load_dataset, normalize_prompt, subsample, task_groups
from router_models.evaluate.metrics import evaluate_router, paired_bootstrap, random_mixing, reference_points
from router_models.scorers import holdout_mask, mean_cost
from router_models.train.router import combine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routing"
ZEROEVAL = ("zeroeval_gsm_math", "zeroeval_mmlu_redux", "zeroeval_zebra")
EXTRA = ("dcrouter", "routerbench_subset", "routerdc7")
EXCLUDE = {  # task families of the other files that are the held-out task, or a translation of it
    "gsm8k": {"gsm8k", "agentverse-mgsm"},
    "math-l5": {"math"},
    "mmlu-redux": {"mmlu"},
    "zebra-grid": {"agentverse-logicgrid"},
}
SCORERS = ("irt", "sae_irt")


def _scorers(names: tuple[str, ...] = SCORERS) -> dict[str, tuple[Any, str]]:
    from router_models.scorers.registry import presets

    return {p.name: (partial(kind.make, p), p.features) for p, kind in presets("harness") if p.name in names}


def one_split(
    ds: RoutingDataset, zero: np.ndarray, feats: Any, held: str, n_boot: int, scorers: tuple[str, ...] = SCORERS
) -> dict[str, Any]:
    """``zero``: [n] rows of the zeroeval files; ``feats``: aligned PromptFeatures."""
    groups = task_groups(ds.tasks)
    test = zero & (groups == held)
    seen = {normalize_prompt(str(p)) for p in ds.prompts[test]}
    fresh = np.array([normalize_prompt(str(p)) not in seen for p in ds.prompts], dtype=bool)
    related = ~zero & np.isin(groups, sorted(EXCLUDE.get(held, set())))
    arms = {"zeroeval only": zero & ~test & fresh, "+ other files": ~test & fresh & ~related}
    complete = ~np.isnan(ds.scores[test]).any(axis=0) & (~np.isnan(ds.scores[arms["zeroeval only"]])).any(axis=0)
    cols = np.flatnonzero(complete)
    models = tuple(ds.models[j] for j in cols)
    s_te, c_te = ds.scores[test][:, cols], ds.costs[test][:, cols]
    tr0 = arms["zeroeval only"]
    pred_cost = np.broadcast_to(mean_cost(ds.scores[tr0][:, cols], ds.costs[tr0][:, cols]), s_te.shape)
    refs = reference_points(s_te, c_te, models)
    views = {"sae": feats.sparse, "dense": feats.dense}
    out: dict[str, Any] = {
        "n_test": int(test.sum()),
        "n_train": {arm: int(m.sum()) for arm, m in arms.items()},
        "n_models_scored": len(models),
        "n_models_fitted": {arm: int((~np.isnan(ds.scores[m])).any(axis=0).sum()) for arm, m in arms.items()},
        "random_mixing_auc": random_mixing(refs)["auc"],
        "routers": {},
    }
    for name, (make, kind) in _scorers(scorers).items():
        preds = {}
        for arm, rows in arms.items():
            t0 = time.perf_counter()
            x = views[kind]
            q = make().fit(x[rows], ds.scores[rows], holdout_mask(int(rows.sum()))).predict_quality(x[test])
            preds[arm] = np.asarray(q)[:, cols]
            res = evaluate_router(preds[arm], pred_cost, s_te, c_te, models, refs)
            out["routers"][f"{name} · {arm}"] = {
                "auc": res["auc"],
                "cost_at_95": res["cost_at_95"],
                "peak_quality": res["peak_quality"],
                "fit_s": round(time.perf_counter() - t0, 1),
            }
            print(
                f"  {held:<11} {name:<8} {arm:<14} auc {res['auc']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True
            )
        out["routers"][f"{name} · + other files"]["vs_zeroeval_only"] = paired_bootstrap(
            preds["+ other files"], preds["zeroeval only"], pred_cost, s_te, c_te, models, n_boot=n_boot
        )
    return out


def markdown(results: dict[str, Any], scorers: tuple[str, ...] = SCORERS) -> str:
    lines = [
        "| held-out task | n test | train prompts (zeroeval / + other files) | models fitted | random mixing | "
        + " | ".join(f"{s} zeroeval only | {s} + other files (Δ [95% CI])" for s in scorers)
        + " |",
        "|" + "---|" * (5 + 2 * len(scorers)),
    ]
    for task, r in results.items():
        cells = []
        for s in scorers:
            if f"{s} · zeroeval only" not in r["routers"]:
                cells += ["–", "–"]
                continue
            a, b = r["routers"][f"{s} · zeroeval only"], r["routers"][f"{s} · + other files"]
            d = b["vs_zeroeval_only"]
            cells += [f"{a['auc']:.3f}", f"{b['auc']:.3f} ({d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}])"]
        n0, n1 = r["n_train"]["zeroeval only"], r["n_train"]["+ other files"]
        m0, m1 = r["n_models_fitted"]["zeroeval only"], r["n_models_fitted"]["+ other files"]
        lines.append(
            f"| {task} | {r['n_test']} | {n0} / {n1} | {m0} / {m1} | {r['random_mixing_auc']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", required=True, help="SAE folder (its backbone gives the dense view too)")
    ap.add_argument("--tasks", nargs="*", default=list(EXCLUDE))
    ap.add_argument("--cap", type=int, default=3000, help="at most this many train prompts per other file")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--scorers", nargs="*", default=list(SCORERS), choices=SCORERS)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from router_models.features.cache import cached_features

    datasets = [load_dataset(SHARED / f"{f}.parquet") for f in ZEROEVAL]
    datasets += [subsample(load_dataset(SHARED / f"{f}.parquet"), args.cap, args.cap // 5) for f in EXTRA]
    ds = combine(datasets)
    zero = np.array([str(t).split(":")[0] in ZEROEVAL for t in ds.tasks], dtype=bool)
    feats, _, _ = cached_features(args.sae, [str(p) for p in ds.prompts], 128, 32)
    scorers = tuple(args.scorers)
    results = {held: one_split(ds, zero, feats, held, args.n_boot, scorers) for held in args.tasks}
    write_outputs(args.out, "loto_extra", results, markdown(results, SCORERS))


if __name__ == "__main__":
    main()

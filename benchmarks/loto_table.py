"""Leave-one-task-out routing table of single scorers (no selection): train on every task but one, test on it.

The served pipeline's table is ``sae-router loto`` (:mod:`router_models.evaluate.loto`, same splits); this script
is the quick scorer-by-scorer version, also on MiniLM sentence embeddings without an SAE.

    python -m benchmarks.loto_table --out runs/loto                       # MiniLM features (fast)
    python -m benchmarks.loto_table --sae artifacts/sae/smollm2-l15 --out runs/loto-sae   # + SAE features

Data: the three zeroeval files (one 50-model pool), tasks grouped as gsm8k, math-l5, mmlu-redux (30 subjects)
and zebra-grid. For each held-out task T every router is fitted on the prompts of the other tasks (both of their
splits: T's prompts are the only test) and scored on all of T's prompts, over the models scored on every one of
them. Training prompts whose normalized text also occurs in T are dropped (the files share a few questions).
Every router predicts cost the same way (each model's mean cost on the training rows), so curves differ only in
predicted quality. Paired bootstrap: each router's AUC minus the best baseline's, on the same resampled prompts.
Prints a markdown table and writes ``loto.json`` and ``loto.md`` into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eval_all import write_outputs
from router_models.data import RoutingDataset, load_dataset
from router_models.evaluate.loto import auc_cell, split_rows
from router_models.evaluate.metrics import evaluate_router, paired_bootstrap, random_mixing, reference_points
from router_models.scorers import ClusterScorer, KNNScorer, ProbeScorer, holdout_mask, mean_cost
from router_models.scorers.irt import IRTScorer
from router_models.train.router import combine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routing"
FILES = ("zeroeval_gsm_math", "zeroeval_mmlu_redux", "zeroeval_zebra")
TASKS = ("gsm8k", "math-l5", "mmlu-redux", "zebra-grid")
N_BOOT = 100
BASELINES = ("knn (dense)", "dense probe", "cluster (dense)", "sae probe", "sae knn")


def routers(sae: bool) -> dict[str, tuple[Any, str]]:
    """name → (fresh scorer, feature kind)."""
    out: dict[str, tuple[Any, str]] = {
        "knn (dense)": (KNNScorer(), "dense"),
        "dense probe": (ProbeScorer(), "dense"),
        "cluster (dense)": (ClusterScorer(), "dense"),
        "irt (dense)": (IRTScorer(name="irt_dense"), "dense"),
    }
    if sae:
        out["sae probe"] = (ProbeScorer(top_k=(64, 256, None)), "sae")
        out["sae knn"] = (KNNScorer(name="sae_knn"), "sae")
        out["irt (sae)"] = (IRTScorer(name="irt_sae"), "sae")
    return out


def features(ds: RoutingDataset, sae: str | None) -> dict[str, Any]:
    texts = [str(p) for p in ds.prompts]
    if sae:
        from router_models.features.cache import cached_features

        feats, _, _ = cached_features(sae, texts, 128, 32)
        return {"sae": feats.sparse, "dense": feats.dense}
    from router_models.evaluate.harness import EvalConfig, _dense_features

    return {"dense": _dense_features(EvalConfig(), texts)}


def one_split(ds: RoutingDataset, feats: dict[str, Any], held: str, sae: bool) -> dict[str, Any]:
    train, test, names = split_rows(ds, held)
    cols = np.array([ds.models.index(m) for m in names])
    models = tuple(names)
    s_tr, s_te = ds.scores[train][:, cols], ds.scores[test][:, cols]
    c_tr, c_te = ds.costs[train][:, cols], ds.costs[test][:, cols]
    pred_cost = np.broadcast_to(mean_cost(s_tr, c_tr), s_te.shape)
    refs = reference_points(s_te, c_te, models)
    val = holdout_mask(int(train.sum()))
    out: dict[str, Any] = {
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "n_models": len(models),
        "best_single": refs["best_single"].to_json(),
        "oracle": refs["oracle"].to_json(),
        "random_mixing_auc": random_mixing(refs)["auc"],
        "routers": {},
    }
    preds = {}
    for name, (scorer, kind) in routers(sae).items():
        t0 = time.time()
        q = scorer.fit(feats[kind][train], s_tr, val).predict_quality(feats[kind][test])
        preds[name] = q
        res = evaluate_router(q, pred_cost, s_te, c_te, models, refs)
        out["routers"][name] = {k: res[k] for k in ("auc", "cost_at_95", "peak_quality")}
        out["routers"][name]["fit_s"] = round(time.time() - t0, 1)
        print(f"  {held:<11} {name:<16} auc {res['auc']:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    best = max((k for k in preds if k in BASELINES), key=lambda k: out["routers"][k]["auc"])
    out["best_baseline"] = best
    for name in preds:
        if name.startswith("irt"):  # the new scorer against the best baseline (bootstrap is the slow part)
            out["routers"][name]["vs_best_baseline"] = paired_bootstrap(
                preds[name], preds[best], pred_cost, s_te, c_te, models, n_boot=N_BOOT
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    names = list(next(iter(results.values()))["routers"])
    head = "| held-out task | n test / train | models | random mixing | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for task, r in results.items():
        cells = [auc_cell(r, n) for n in names]
        row = f"| {task} | {r['n_test']} / {r['n_train']} | {r['n_models']} | {r['random_mixing_auc']:.3f} | "
        lines.append(row + " | ".join(cells) + " |")
    lines.append("")
    lines.append("cost_at_95 (fraction of the best single model's cost to reach 95% of its quality; inf = never):")
    lines.append("")
    lines.append("| held-out task | " + " | ".join(names) + " |")
    lines.append("|" + "---|" * (1 + len(names)))
    for task, r in results.items():
        lines.append(f"| {task} | " + " | ".join(f"{r['routers'][n]['cost_at_95']:.3f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sae", default=None, help="SAE folder: adds SAE-latent routers (SmolLM2 features)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="held-out tasks")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ds = combine([load_dataset(SHARED / f"{f}.parquet") for f in FILES])
    feats = features(ds, args.sae)
    results = {t: one_split(ds, feats, t, args.sae is not None) for t in args.tasks.split(",")}
    write_outputs(args.out, "loto", results, markdown(results))


if __name__ == "__main__":
    main()

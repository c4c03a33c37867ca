"""Leave-one-task-out evaluation: train on every task family but one, test on all of that family's prompts.

In:  routing dataset file(s) in the canonical schema (several are combined into one model table), an SAE folder
     (its backbone gives both the SAE-latent and the dense view of every prompt), optional prices.
Out: per held-out task family, the **served pipeline** (:func:`router_models.train.selection.fit_router`:
     candidate selection, ensemble, calibration, presets; nothing about the held-out task is seen) and every
     registered ``baseline`` scorer plus the ``irt`` presets, refitted in the same run on the same features and
     scored with the same cost prediction (the served router's), with the paired-bootstrap difference of the
     served router's AUC from the best baseline's (the IRT rows are candidates the served pipeline may pick;
     they carry no interval of their own, to keep the run bounded). :func:`run_loto` writes ``loto.json`` and
     ``loto.md``.

Task families come from :func:`router_models.data.task_groups` (the 30 MMLU-Redux subjects are one family).
Training prompts whose normalised text also occurs in the held-out family are dropped (files share a few
questions). The models compared on a split are those with a result on every held-out prompt and on at least one
training prompt. A model run on only some training tasks stays in (its missing rows are NaN): scorers that
estimate abilities jointly (``irt``) are built for exactly that.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from router_models.data import RoutingDataset, normalize_prompt, task_groups
from router_models.features.pooling import PromptFeatures

__all__ = ["LotoConfig", "auc_cell", "leave_one_task_out", "loto_markdown", "run_loto", "split_rows"]

EXTRA_ROUTERS = ("irt", "sae_irt")  # reported next to the baselines (not baselines themselves)
KEYS = ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost", "curve")


@dataclass
class LotoConfig:
    """Options of ``sae-router loto`` (every field is one)."""

    data: list[str]
    """Dataset files, combined into one model table (e.g. the three zeroeval files)."""
    sae: str
    """SAE folder: prompts get its latents and the dense state of its backbone at its layer."""
    out: str
    """Directory for loto.json and loto.md."""
    tasks: list[str] = field(default_factory=list)
    """Held-out task families (default: every family of the data)."""
    prices: str | None = None
    """prices.json (dataset -> model -> $/Mtok in/out) for the served router's cost model."""
    candidates: list[str] = field(default_factory=list)
    """Candidate scorer presets of the served router (default: every registered candidate)."""
    baselines: list[str] = field(default_factory=list)
    """Baselines to fit (labels as in the table, e.g. 'sae knn'; default: every registered baseline and the
    IRT presets). The best of those fitted is the one the served router's interval is against."""
    folds: str = "task"
    """Served router's selection folds: 'task' (one per training task family) or a number k."""
    n_boot: int = 200
    """Bootstrap resamples of the paired AUC difference."""
    max_tokens: int = 128
    """Prompt tokens kept (head + tail)."""
    head_tokens: int = 32
    """Of those, tokens kept from the start."""
    progress: bool = True
    """Show a progress bar."""
    cache: str | None = None
    """Cache folder for backbones and features (default: $SAE_ROUTER_CACHE, else ~/.cache/sae-router)."""


def split_rows(ds: RoutingDataset, held: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train mask, test mask, models) for holding out task family ``held``."""
    groups = task_groups(ds.tasks)
    test = groups == held
    if not test.any():
        raise ValueError(f"{ds.name}: no task family {held!r}; families: {sorted(set(groups))}")
    seen = {normalize_prompt(str(p)) for p in ds.prompts[test]}
    train = ~test & np.array([normalize_prompt(str(p)) not in seen for p in ds.prompts], dtype=bool)
    if not train.any():
        raise ValueError(f"{ds.name}: holding out {held!r} leaves no training prompt")
    complete = ~np.isnan(ds.scores[test]).any(axis=0) & (~np.isnan(ds.scores[train])).any(axis=0)
    models = [m for m, ok in zip(ds.models, complete, strict=True) if ok]
    if len(models) < 2:
        raise ValueError(f"{ds.name}: fewer than 2 models have results on every {held!r} prompt")
    return train, test, models


def _as_train(ds: RoutingDataset) -> RoutingDataset:
    """Every row relabelled ``train`` (a held-out split trains on both splits of the other families)."""
    return replace(ds, splits=np.full(ds.n_prompts, "train", dtype=object))


def _baseline_presets() -> list[tuple[str, Any, str]]:
    """(label, fresh-scorer factory, feature kind) of every baseline preset that reads prompt features (the task
    oracle reads the task label, which a held-out task never has in training) and of the IRT presets."""
    from functools import partial

    from router_models.scorers.registry import presets

    out = [(p.label or p.name, partial(kind.make, p), p.features) for p, kind in presets("baseline")]
    out += [(p.name, partial(kind.make, p), p.features) for p, kind in presets("harness") if p.name in EXTRA_ROUTERS]
    return [(label, make, feats) for label, make, feats in out if feats in ("sae", "dense")]


def leave_one_task_out(
    ds: RoutingDataset,
    feats: PromptFeatures,
    held: str,
    *,
    spec: Any = None,
    prices: Any = None,
    labels: Any = None,
    candidates: list[str] | None = None,
    folds: int | str = "task",
    n_boot: int = 200,
    baselines: list[str] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """One held-out family: the served pipeline and the baselines, fitted on the other families (rows of
    ``feats`` align with ``ds``), scored on every prompt of ``held``."""
    from router_models.data import validation_split
    from router_models.evaluate.metrics import evaluate_router, paired_bootstrap, random_mixing, reference_points
    from router_models.train.router import parse_folds, pick_candidates
    from router_models.train.selection import fit_router

    table = _baseline_presets()  # checked before any fitting: a typo fails at once
    if baselines:
        unknown = sorted(set(baselines) - {label for label, _, _ in table})
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; available: {[label for label, _, _ in table]}")
        table = [t for t in table if t[0] in baselines]
    train_mask, test_mask, models = split_rows(ds, held)
    tr = _as_train(ds.subset(train_mask).select_models(models))
    te = ds.subset(test_mask).select_models(models)
    f_tr, f_te = feats.rows(np.flatnonzero(train_mask)), feats.rows(np.flatnonzero(test_mask))
    texts_te = [str(p) for p in te.prompts]
    val = validation_split(tr)[1]
    started = time.perf_counter()
    router, selection = fit_router(
        f_tr,
        tr,
        val,
        spec=spec,
        prices=prices,
        labels=labels,
        candidates=pick_candidates(candidates or []),
        folds=parse_folds(folds),
    )
    quality, pred_cost = router.predict(f_te, texts_te)
    refs = reference_points(te.scores, te.costs, tuple(models))
    served_name = f"sae-router ({selection['selected']})"
    routers: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    res = evaluate_router(quality, pred_cost, te.scores, te.costs, tuple(models), refs)
    routers[served_name] = {k: res[k] for k in KEYS}
    routers[served_name]["fit_s"] = round(time.perf_counter() - started, 1)
    log(f"  {held:<12} {served_name:<28} auc {res['auc']:.3f}  ({routers[served_name]['fit_s']:.0f} s)")
    views = {"sae": (f_tr.sparse, f_te.sparse), "dense": (f_tr.dense, f_te.dense)}
    fitted: list[str] = []
    for label, make, kind in table:
        t0 = time.perf_counter()
        x_tr, x_te = views[kind]
        preds[label] = q = make().fit(x_tr, tr.scores, val).predict_quality(x_te)
        res = evaluate_router(q, pred_cost, te.scores, te.costs, tuple(models), refs)
        routers[label] = {k: res[k] for k in KEYS}
        routers[label]["fit_s"] = round(time.perf_counter() - t0, 1)
        if label not in EXTRA_ROUTERS:
            fitted.append(label)
        log(f"  {held:<12} {label:<28} auc {res['auc']:.3f}  ({routers[label]['fit_s']:.0f} s)")
    if not fitted:
        raise ValueError("choose at least one baseline that is not an IRT preset")
    best = max(fitted, key=lambda k: routers[k]["auc"])
    routers[served_name]["vs_best_baseline"] = paired_bootstrap(
        quality, preds[best], pred_cost, te.scores, te.costs, tuple(models), n_boot=n_boot
    )
    return {
        "held_out": held,
        "n_train": tr.n_prompts,
        "n_test": te.n_prompts,
        "models": models,
        "best_single": refs["best_single"].to_json(),
        "cheapest": refs["cheapest"].to_json(),
        "oracle": refs["oracle"].to_json(),
        "random_mixing_auc": random_mixing(refs)["auc"],
        "served": served_name,
        "best_baseline": best,
        "baselines": fitted,
        "routers": routers,
        "selection": {k: v for k, v in selection.items() if k in ("selected", "selection", "candidates")},
    }


def auc_cell(r: dict[str, Any], name: str) -> str:
    """A router's AUC, with its paired-bootstrap difference from the best baseline when it has one; the best
    baseline in bold."""
    a = r["routers"][name]
    cell = f"{a['auc']:.3f}"
    vs = a.get("vs_best_baseline")
    if vs:
        cell += f" ({vs['delta']:+.3f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}])"
    elif name == r["best_baseline"]:
        cell = f"**{cell}**"
    return cell


def loto_markdown(results: dict[str, dict[str, Any]]) -> str:
    """AUC, cost_at_95 and peak-quality tables: one row per held-out family; the served router's AUC carries its
    difference from the best baseline (bold) with its 95% paired-bootstrap interval."""
    first = next(iter(results.values()))
    names = ["served", *[n for n in first["routers"] if n != first["served"]]]

    def col(r: dict[str, Any], n: str) -> str:
        return r["served"] if n == "served" else n

    head = "| held-out task | n test / train | models | random mixing | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for task, r in results.items():
        row = f"| {task} | {r['n_test']} / {r['n_train']} | {len(r['models'])} | {r['random_mixing_auc']:.3f} | "
        lines.append(row + " | ".join(auc_cell(r, col(r, n)) for n in names) + " |")
    lines += ["", "Served router per split: " + "; ".join(f"{t}: {r['served']}" for t, r in results.items()), ""]
    lines += ["cost_at_95 (share of the best single model's cost to reach 95% of its quality; inf = never):", ""]
    lines += ["| held-out task | oracle | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for task, r in results.items():
        best_cost = r["best_single"]["cost"]
        oracle = r["oracle"]["cost"] / best_cost if best_cost else float("nan")
        cells = " | ".join(f"{r['routers'][col(r, n)]['cost_at_95']:.3f}" for n in names)
        lines.append(f"| {task} | {oracle:.3f} | {cells} |")
    lines += ["", "peak quality (best single model's quality in brackets):", ""]
    lines += ["| held-out task | best single | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for task, r in results.items():
        cells = " | ".join(f"{r['routers'][col(r, n)]['peak_quality']:.3f}" for n in names)
        lines.append(f"| {task} | {r['best_single']['quality']:.3f} ({r['best_single']['model']}) | {cells} |")
    return "\n".join(lines)


def run_loto(cfg: LotoConfig) -> dict[str, Any]:
    """Features once for every prompt (cached), then :func:`leave_one_task_out` per family; writes the report."""
    from router_models.data import load_dataset
    from router_models.features.cache import cached_features
    from router_models.features.spec import FeatureSpec
    from router_models.train.router import combine, load_prices

    datasets = [load_dataset(p) for p in cfg.data]
    ds = combine(datasets)
    texts = [str(p) for p in ds.prompts]
    feats, bcfg, encoder = cached_features(
        cfg.sae, texts, cfg.max_tokens, cfg.head_tokens, progress=cfg.progress, cache=cfg.cache
    )
    spec = FeatureSpec.from_encoder(bcfg, encoder, cfg.sae, int(feats.dense.shape[1]))
    labels_file = Path(cfg.sae) / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.exists() else None
    prices = load_prices(cfg.prices, [d.name for d in datasets])
    families = cfg.tasks or sorted(set(task_groups(ds.tasks)))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for held in families:
        results[held] = leave_one_task_out(
            ds,
            feats,
            held,
            spec=spec,
            prices=prices,
            labels=labels,
            candidates=cfg.candidates or None,
            folds=cfg.folds,
            n_boot=cfg.n_boot,
            baselines=cfg.baselines or None,
        )
        (out / "loto.json").write_text(json.dumps(results, indent=1, default=float))  # partial results survive
    table = loto_markdown(results)
    (out / "loto.md").write_text(table + "\n")
    return {"results": results, "markdown": table, "paths": [str(out / "loto.json"), str(out / "loto.md")]}

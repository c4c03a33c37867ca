"""Train a router artifact end to end: dataset(s) + SAE → features → fit_router → test report → directory.

In:  routing dataset file(s) in the canonical schema, an SAE folder (``sae-router train-sae``), optional
     prices (the shared ``prices.json`` layout) and a model pool.
Out: a router directory (:func:`router_models.artifact.load.save_router`) whose manifest carries the selection
     report (every candidate's cross-validated AUC), calibration, presets and the **test-split** metrics of
     the selected router next to baselines fitted in the same run on the same features (kNN, dense probe,
     UniRoute clusters, SAE probe, SAE kNN, task oracle), the reference points, and the router's AUC minus the
     best baseline's with a paired bootstrap interval.

The default router is made by::

    sae-router train --data ../shared/data/routing/zeroeval_{gsm_math,mmlu_redux,zebra}.parquet --folds task \\
        --candidates knn sae_knn cluster irt sae_irt --sae artifacts/sae/minilm-l3 \\
        --prices ../shared/data/routing/prices.json --out artifacts/default-router
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router_models.data import RoutingDataset, load_dataset, validation_split
from router_models.features.cache import cached_features
from router_models.features.pooling import PromptFeatures

__all__ = ["TrainConfig", "combine", "load_prices", "train_router"]


@dataclass
class TrainConfig:
    """Options of ``sae-router train`` (every field is one)."""

    data: list[str]
    """Dataset file(s); several are combined."""
    sae: str
    """SAE folder from `sae-router train-sae`."""
    out: str
    """Router directory to write."""
    models: list[str] = field(default_factory=list)
    """Model pool, comma-separated (default: every model of the data)."""
    complete_models: bool = False
    """Keep only models with a result on every prompt."""
    prices: str | None = None
    """prices.json (dataset -> model -> $/Mtok in/out)."""
    max_train: int | None = None
    """Subsample train prompts (stable hash)."""
    max_test: int | None = None
    """Subsample test prompts (stable hash)."""
    max_tokens: int = 128
    """Prompt tokens kept (head + tail)."""
    folds: str = "5"
    """Selection folds: a number k (k-fold over prompts) or 'task' (one fold per task family: selection,
    calibration and presets then see predictions for tasks the fit never saw)."""
    candidates: list[str] = field(default_factory=list)
    """Candidate scorer presets to try (default: every registered candidate)."""
    overwrite: bool = False
    """Replace an existing --out."""
    progress: bool = True
    """Show a progress bar."""
    cache: str | None = None
    """Cache folder for backbones and features (default: $SAE_ROUTER_CACHE, else ~/.cache/sae-router)."""


def combine(datasets: Sequence[RoutingDataset]) -> RoutingDataset:
    """One dataset from several (prompt ids prefixed by dataset name; models unioned, NaN where absent)."""
    import pandas as pd

    from router_models.data import from_long_frame

    if len(datasets) == 1:
        return datasets[0]
    frames = []
    for ds in datasets:
        df = ds.to_long_frame()
        df["prompt_id"] = ds.name + ":" + df["prompt_id"].astype(str)
        df["task"] = ds.name + ":" + df["task"].astype(str)
        frames.append(df)
    return from_long_frame(pd.concat(frames, ignore_index=True), "+".join(d.name for d in datasets))


def load_prices(path: str | Path | None, dataset_names: Sequence[str]) -> dict[str, Any] | None:
    """Per-model token prices from a prices.json (file -> model -> prices), merged over the named datasets."""
    from router_models.decide.costs import parse_prices

    if path is None:
        return None
    raw = json.loads(Path(path).read_text())
    merged: dict[str, Any] = {}
    for name in dataset_names:
        merged.update(raw.get(name, {}))
    return parse_prices(merged) if merged else None


def _baselines(
    feats_train: PromptFeatures,
    feats_test: PromptFeatures,
    train: RoutingDataset,
    test: RoutingDataset,
    val: np.ndarray,
    pred_cost: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Baselines fitted on the same train rows and features, scored on test with the router's cost model;
    returns (their report entries, their test predictions)."""
    from router_models.evaluate.metrics import evaluate_router
    from router_models.scorers.registry import presets

    views = {
        "dense": (feats_train.dense, feats_test.dense),
        "sae": (feats_train.sparse, feats_test.sparse),
        "task": (np.asarray(train.tasks), np.asarray(test.tasks)),
    }
    out, preds = {}, {}
    for p, kind in presets("baseline"):
        name, (x_train, x_test) = p.label or p.name, views[p.features]
        preds[name] = q = kind.make(p).fit(x_train, train.scores, val).predict_quality(x_test)
        res = evaluate_router(q, pred_cost, test.scores, test.costs, tuple(test.models))
        out[name] = {k: res[k] for k in ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost", "curve")}
    return out, preds


def _versus_best_baseline(
    quality: np.ndarray,
    baselines: dict[str, Any],
    preds: dict[str, np.ndarray],
    pred_cost: np.ndarray,
    test: RoutingDataset,
) -> dict[str, Any]:
    """The router's test AUC minus the best deployable baseline's, with a paired bootstrap 95% interval."""
    from router_models.evaluate.metrics import paired_bootstrap

    deployable = [k for k in baselines if "oracle" not in k]
    best = max(deployable, key=lambda k: baselines[k]["auc"])
    boot = paired_bootstrap(quality, preds[best], pred_cost, test.scores, test.costs, tuple(test.models))
    return {"baseline": best, **boot}


def parse_folds(folds: str | int) -> int | Literal["task"]:
    """``"task"`` or a number of folds ≥ 2 (``--folds``)."""
    if folds == "task":
        return "task"
    try:
        k = int(folds)
    except ValueError:
        raise ValueError(f"--folds must be 'task' or a number ≥ 2, got {folds!r}") from None
    if k < 2:
        raise ValueError(f"--folds must be 'task' or a number ≥ 2, got {folds!r}")
    return k


def pick_candidates(names: Sequence[str]) -> dict[str, Any] | None:
    """The registered candidates named (None = all of them); raises naming the unknown ones."""
    from router_models.train.selection import default_candidates

    if not names:
        return None
    cands = default_candidates()
    unknown = sorted(set(names) - set(cands))
    if unknown:
        raise ValueError(f"unknown candidate(s) {unknown}; registered: {sorted(cands)}")
    return {k: v for k, v in cands.items() if k in names}


def train_router(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """Fit, select, calibrate, evaluate on test and save; returns (router, test report)."""
    from router_models.artifact.save import save_router
    from router_models.data import subsample
    from router_models.evaluate.metrics import evaluate_router, reference_points, reference_report
    from router_models.features.spec import FeatureSpec
    from router_models.train.selection import fit_router

    started = time.perf_counter()
    folds, candidates = parse_folds(cfg.folds), pick_candidates(cfg.candidates)  # bad options fail first
    datasets = [load_dataset(p) for p in cfg.data]
    ds = combine(datasets)
    if cfg.complete_models:
        ds = ds.select_models([m for j, m in enumerate(ds.models) if not np.isnan(ds.scores[:, j]).any()])
    if cfg.models:
        ds = ds.select_models(cfg.models)
    ds = subsample(ds, cfg.max_train, cfg.max_test)
    train, test = ds.split("train"), ds.split("test")
    texts_train, texts_test = [str(p) for p in train.prompts], [str(p) for p in test.prompts]
    feats, bcfg, encoder = cached_features(
        cfg.sae, texts_train + texts_test, cfg.max_tokens, progress=cfg.progress, cache=cfg.cache
    )
    n = len(texts_train)
    f_train, f_test = feats.rows(slice(None, n)), feats.rows(slice(n, None))
    labels_file = Path(cfg.sae) / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.exists() else None
    spec = FeatureSpec.from_encoder(bcfg, encoder, cfg.sae, int(feats.dense.shape[1]))
    val = validation_split(train)[1]
    prices = load_prices(cfg.prices, [d.name for d in datasets])
    router, selection = fit_router(
        f_train,
        train,
        val,
        spec=spec,
        prices=prices,
        labels=labels,
        candidates=candidates,
        folds=folds,
    )
    # One prediction on test serves the router's own curve and, as cost prediction, every baseline.
    test = test.select_models(router.models)
    quality, pred_cost = router.predict(f_test, texts_test)
    test_eval = evaluate_router(quality, pred_cost, test.scores, test.costs, router.models)
    refs = reference_points(test.scores, test.costs, tuple(test.models))
    reference = reference_report(refs)
    baselines, base_preds = _baselines(f_train, f_test, train, test, val, pred_cost)
    report = {
        "dataset": ds.name,
        "n_train": train.n_prompts,
        "n_test": test.n_prompts,
        "models": list(test.models),
        "selected": selection["selected"],
        "reference": reference,
        "routers": {
            f"sae-router ({selection['selected']})": {
                k: test_eval[k] for k in ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost", "curve")
            },
            **baselines,
        },
        "vs_best_baseline": _versus_best_baseline(quality, baselines, base_preds, pred_cost, test),
        "selection": selection,
        "seconds": round(time.perf_counter() - started, 1),
    }
    router.report["test"] = {k: v for k, v in report.items() if k != "selection"}
    save_router(router, cfg.out, overwrite=cfg.overwrite)
    return router, report


def artifact_features(
    router: Any, artifact: str | Path, texts: Sequence[str], progress: bool = True, cache: str | Path | None = None
) -> PromptFeatures:
    """Features of ``texts`` as the artifact's manifest defines them (cached under ``cache``)."""
    spec = router.spec
    sae = Path(artifact) / "sae"
    feats, _, _ = cached_features(sae, texts, spec.max_tokens, spec.head_tokens, progress=progress, cache=cache)
    return feats


def evaluate_artifact(
    artifact: str | Path,
    data: str | Path,
    max_test: int | None = None,
    progress: bool = True,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score a trained router as it is (no refitting) on the test split of ``data``.

    The dataset may be one the router never saw and may hold only part of its pool: the router chooses among
    the models both share, and the reference points are computed over those models.
    """
    from router_models.artifact.load import load_router
    from router_models.data import subsample
    from router_models.evaluate.metrics import evaluate_router, reference_points, reference_report

    router = load_router(artifact, load_backbone=False)
    test = subsample(load_dataset(data), 0, max_test).split("test")
    shared = [m for m in router.models if m in test.models]
    if not shared:
        raise ValueError(f"{test.name} shares no model with the router (router: {list(router.models)})")
    test = test.select_models(shared)
    keep = ~np.isnan(test.scores).all(axis=1)
    test = test.subset(keep)
    texts = [str(p) for p in test.prompts]
    q, c = router.predict(artifact_features(router, artifact, texts, progress, cache), texts)
    idx = [router.models.index(m) for m in shared]
    refs = reference_points(test.scores, test.costs, tuple(shared))
    reference = reference_report(refs)
    result = evaluate_router(q[:, idx], c[:, idx], test.scores, test.costs, tuple(shared), refs)
    return {
        "dataset": test.name,
        "n_test": test.n_prompts,
        "models": shared,
        "router": {"artifact": str(artifact), "version": router.version, "models": list(router.models)},
        "reference": reference,
        "routers": {"sae-router": result},
        "notes": [f"router evaluated as trained; {len(shared)} of its {len(router.models)} models are in the data"],
    }

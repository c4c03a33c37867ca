"""The evaluation loop: fit routers on a dataset's train split, score them on its test split.

In:  a routing dataset file, router names, feature settings.
Out: the report dictionary (``report.json``'s layout) with every router's metrics and curve next to the
     reference points; :func:`run_eval` also writes it with :func:`router_models.report.write_report`.

Every router sees the same thing: features of the prompt, training scores, and as its cost prediction
each model's mean training cost. Hyperparameters are chosen on a validation part of train
(:func:`router_models.data.validation_split`), never on test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from router_models.data import RoutingDataset, load_dataset, validation_split
from router_models.evaluate import evaluate_router, reference_points, reference_report
from router_models.scorers import KNNScorer, ProbeScorer, Scorer, TaskOracle, mean_cost

__all__ = ["ROUTERS", "EvalConfig", "evaluate_dataset", "run_eval"]


@dataclass(frozen=True)
class RouterSpec:
    """A router in the harness: which features it reads and which scorer maps them to quality."""

    features: str  # "dense" | "sae" | "task"
    make: Callable[[], Scorer]
    description: str


ROUTERS: dict[str, RouterSpec] = {
    "knn": RouterSpec("dense", KNNScorer, "cosine kNN on the dense pooled hidden state"),
    "dense": RouterSpec("dense", ProbeScorer, "per-model logistic/ridge probe on the dense pooled hidden state"),
    "task_oracle": RouterSpec("task", TaskOracle, "per-task mean train score (reads the task label)"),
    "sae_probe": RouterSpec("sae", ProbeScorer, "per-model logistic/ridge probe on pooled SAE latents"),
    "sae_knn": RouterSpec("sae", KNNScorer, "cosine kNN on pooled SAE latents"),
}


@dataclass(frozen=True)
class EvalConfig:
    """Feature settings shared by the dense routers."""

    backbone: str = "all-MiniLM-L6-v2"
    layer: int = -1
    pooling: str = "mean"
    max_tokens: int = 256
    head_tokens: int = 32  # few-shot prompts share their head: keep mostly the tail (see shared data README)
    batch_size: int = 32
    val_fraction: float = 0.2
    sae: str | None = None  # SAE folder: adds "sae" features; "dense" then comes from the SAE's backbone/layer
    max_train: int | None = None  # deterministic subsample (by prompt_id hash) to bound backbone time
    max_test: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _dense_features(cfg: EvalConfig, texts: list[str]) -> np.ndarray:
    from router_models.backbone import BackboneConfig
    from router_models.embeddings import EmbeddingSpec, embed_texts

    bcfg = BackboneConfig(
        name=cfg.backbone, max_tokens=cfg.max_tokens, head_tokens=cfg.head_tokens, batch_size=cfg.batch_size
    )
    return embed_texts(texts, EmbeddingSpec(bcfg, cfg.layer, cfg.pooling), progress=cfg.progress)


def _sae_features(cfg: EvalConfig, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pooled SAE latents [n, 2·d_sae], dense mean-pooled state at the SAE's layer [n, d_model])."""
    from router_models.train_router import cached_features

    assert cfg.sae is not None
    feats, _, _ = cached_features(cfg.sae, texts, cfg.max_tokens, cfg.head_tokens, progress=cfg.progress)
    return feats.dense_sparse(), feats.dense


def _features(kind: str, ds: RoutingDataset, cfg: EvalConfig, cache: dict[str, np.ndarray]) -> np.ndarray:
    if kind == "task":
        return np.asarray(ds.tasks)
    if kind not in cache:
        texts = [str(p) for p in ds.prompts]
        if kind == "sae" or (kind == "dense" and cfg.sae):
            cache["sae"], cache["dense"] = _sae_features(cfg, texts)
        elif kind == "dense":
            cache[kind] = _dense_features(cfg, texts)
        else:
            raise ValueError(f"unknown feature kind {kind!r}")
    return cache[kind]


def subsample(ds: RoutingDataset, max_train: int | None, max_test: int | None) -> RoutingDataset:
    """At most ``max_train`` / ``max_test`` prompts per split, picked by a hash of prompt_id (stable)."""
    import hashlib

    rank = np.array([int(hashlib.sha1(str(p).encode()).hexdigest(), 16) % 10**9 for p in ds.prompt_ids])
    keep = np.zeros(ds.n_prompts, dtype=bool)
    for split, cap in (("train", max_train), ("test", max_test)):
        rows = np.flatnonzero(np.asarray(ds.splits) == split)
        if cap is not None and len(rows) > cap:
            rows = rows[np.argsort(rank[rows], kind="stable")[:cap]]
        keep[rows] = True
    return ds.subset(keep)


def evaluate_dataset(
    ds: RoutingDataset, routers: list[str], cfg: EvalConfig, features: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Fit each router on ds's train split, evaluate on its test split; returns the report dict.

    ``features`` optionally supplies precomputed feature matrices by kind (rows aligned with ``ds``).
    """
    unknown = [r for r in routers if r not in ROUTERS]
    if unknown:
        raise ValueError(f"unknown router(s) {unknown}; choose from {sorted(ROUTERS)}")
    if any(ROUTERS[r].features == "sae" for r in routers) and not cfg.sae:
        raise ValueError("SAE routers need --sae PATH (a folder written by `sae-router train-sae`)")
    if cfg.max_train is not None or cfg.max_test is not None:
        ds = subsample(ds, cfg.max_train, cfg.max_test)
    is_train = np.asarray(ds.splits) == "train"
    train, test = ds.split("train"), ds.split("test")
    _, val = validation_split(train, cfg.val_fraction)
    pred_cost = mean_cost(train.scores, train.costs)
    models = tuple(ds.models)
    refs = reference_points(test.scores, test.costs, models)
    cache: dict[str, np.ndarray] = dict(features or {})
    results: dict[str, Any] = {}
    for name in routers:
        spec = ROUTERS[name]
        feats = _features(spec.features, ds, cfg, cache)
        started = time.perf_counter()
        scorer = spec.make().fit(feats[is_train], train.scores, val)
        quality = scorer.predict_quality(feats[~is_train])
        results[name] = evaluate_router(quality, pred_cost, test.scores, test.costs, models, refs)
        results[name]["fit_seconds"] = round(time.perf_counter() - started, 3)
        results[name]["description"] = spec.description
    reference = reference_report(refs)
    return {
        "dataset": ds.name,
        "n_train": int(train.n_prompts),
        "n_test": int(test.n_prompts),
        "models": list(models),
        "features": {
            "backbone": cfg.backbone,
            "layer": cfg.layer,
            "pooling": cfg.pooling,
            "max_tokens": cfg.max_tokens,
            "head_tokens": cfg.head_tokens,
            "sae": cfg.sae,
            "max_train": cfg.max_train,
            "max_test": cfg.max_test,
        },
        "reference": reference,
        "routers": results,
        "notes": [
            "cost prediction for every router: each model's mean train cost",
            "task_oracle reads the task label, which a deployed router never has",
        ],
    }


def run_eval(data: str | Path, routers: list[str], out_dir: str | Path, cfg: EvalConfig) -> dict[str, Path]:
    """Load ``data``, evaluate ``routers`` and write report.json / report.md / curve.png to ``out_dir``."""
    from router_models.report import write_report

    report = evaluate_dataset(load_dataset(data), routers, cfg)
    return write_report(report, out_dir)

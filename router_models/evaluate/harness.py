"""The evaluation loop: fit routers on a dataset's train split, score them on its test split.

In:  a routing dataset file, router names, feature settings.
Out: the report dictionary (``report.json``'s layout) with every router's metrics and curve next to the
     reference points; :func:`run_eval` also writes it with :func:`router_models.evaluate.report.write_report`.

Every router sees the same thing: features of the prompt, training scores, and as its cost prediction
each model's mean training cost. Hyperparameters are chosen on a validation part of train
(:func:`router_models.data.validation_split`), never on test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router_models.data import RoutingDataset, load_dataset, subsample, validation_split
from router_models.evaluate.metrics import evaluate_router, reference_points, reference_report
from router_models.scorers import Scorer, mean_cost
from router_models.scorers.registry import presets

__all__ = ["EvalConfig", "RouterSpec", "evaluate_dataset", "harness_routers", "run_eval"]


@dataclass(frozen=True)
class RouterSpec:
    """A router in the harness: which features it reads and which scorer maps them to quality."""

    features: str  # "dense" | "sae" | "task"
    make: Callable[[], Scorer]
    description: str


def harness_routers() -> dict[str, RouterSpec]:
    """Every registered scorer preset with the ``harness`` role (:mod:`router_models.scorers.registry`)."""
    return {p.name: RouterSpec(p.features, partial(kind.make, p), p.description) for p, kind in presets("harness")}


@dataclass(frozen=True)
class EvalConfig:
    """Feature settings of ``sae-router eval`` (every field is one of its options)."""

    backbone: str = "all-MiniLM-L6-v2"
    """Backbone for dense features: packaged name, path or hub id."""
    layer: int = -1
    """Hidden layer to pool (0-based block index; -1 = last)."""
    pooling: Literal["mean", "max", "last"] = "mean"
    """Pooling over prompt tokens."""
    max_tokens: int = 256
    """Prompt tokens kept (head + tail)."""
    head_tokens: int = 32
    """Of those, tokens kept from the start (few-shot prompts share their head: keep mostly the tail)."""
    batch_size: int = 32
    """Prompts per backbone forward pass."""
    val_fraction: float = 0.2
    """Share of the train split that chooses hyperparameters."""
    sae: str | None = None
    """SAE folder (from train-sae): enables sae_probe / sae_knn; dense features then come from the same backbone
    and layer."""
    max_train: int | None = None
    """Subsample train prompts (stable hash), to bound backbone time."""
    max_test: int | None = None
    """Subsample test prompts (stable hash)."""
    progress: bool = True
    """Show a progress bar."""
    cache: str | None = None
    """Cache folder for backbones and features (default: $SAE_ROUTER_CACHE, else ~/.cache/sae-router)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _dense_features(cfg: EvalConfig, texts: list[str]) -> np.ndarray:
    from router_models.features.backbone import BackboneConfig
    from router_models.features.embeddings import EmbeddingSpec, embed_texts

    bcfg = BackboneConfig(
        name=cfg.backbone,
        max_tokens=cfg.max_tokens,
        head_tokens=cfg.head_tokens,
        batch_size=cfg.batch_size,
        cache=cfg.cache,
    )
    return embed_texts(texts, EmbeddingSpec(bcfg, cfg.layer, cfg.pooling), progress=cfg.progress)


def _sae_features(cfg: EvalConfig, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pooled SAE latents [n, 2·d_sae], dense mean-pooled state at the SAE's layer [n, d_model])."""
    from router_models.features.cache import cached_features

    assert cfg.sae is not None
    feats, _, _ = cached_features(
        cfg.sae, texts, cfg.max_tokens, cfg.head_tokens, progress=cfg.progress, cache=cfg.cache
    )
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


def evaluate_dataset(
    ds: RoutingDataset, routers: list[str], cfg: EvalConfig, features: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Fit each router on ds's train split, evaluate on its test split; returns the report dict.

    ``features`` optionally supplies precomputed feature matrices by kind (rows aligned with ``ds``).
    """
    table = harness_routers()
    unknown = [r for r in routers if r not in table]
    if unknown:
        raise ValueError(f"unknown router(s) {unknown}; choose from {sorted(table)}")
    if any(table[r].features == "sae" for r in routers) and not cfg.sae:
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
        spec = table[name]
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
    from router_models.evaluate.report import write_report

    report = evaluate_dataset(load_dataset(data), routers, cfg)
    return write_report(report, out_dir)

"""Training a router: pick the scorer by cross-validated routing AUC, calibrate it, set presets.

In:  features of the training prompts (:class:`~router_models.features.pooling.PromptFeatures`), the train split of a
     :class:`~router_models.data.RoutingDataset` (train rows only: test rows are never passed in), fold ids
     over those rows, prices, candidate scorers.
Out: :func:`select_scorer` → :class:`Selection` (the winner refit on all train rows, every candidate's
     cross-validated metrics and its out-of-fold predictions); :func:`fit_router` → a
     :class:`~router_models.artifact.load.TrainedRouter` and a report.

Selection protocol (k-fold cross-fitting on the train rows; the test split is never seen):

1. Each candidate is fitted k times, each time on the rows outside one fold (choosing its own hyperparameters
   on a seeded inner hold-out of those rows), and predicts that fold. Every train row thus gets an
   out-of-fold prediction from a fit that never saw it.
2. Each candidate is scored by the area under its quality–cost curve over all train rows
   (:func:`router_models.evaluate.metrics.curve_metrics`, reference points from the same rows), because that is what
   routing is judged by; the Brier score breaks ties. On a few hundred prompts a single 20% validation split
   cannot separate candidates 0.01 AUC apart; k folds use every row.
3. With ``ensemble``, greedy ensemble selection with replacement (Caruana et al. 2004, "Ensemble Selection
   from Libraries of Models") on the out-of-fold predictions: start from the best candidate, repeatedly add
   the candidate (again, possibly) whose inclusion in the average raises the AUC most, stop when none does.
   The weights are the counts. Chosen when it beats the best single candidate.
4. The winner is refit on every train row with ``val`` as its hyperparameter rows.

Calibration (:class:`~router_models.train.calibration.Calibrator`) and presets
(:func:`~router_models.train.calibration.fit_presets`) are then fitted on the winner's out-of-fold predictions of
all train rows. They are in-sample for those maps; the test split (``TrainedRouter.evaluate``) is the
honest check.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from router_models.decide.costs import CostModel, ModelPrice
from router_models.evaluate.metrics import curve_metrics, reference_points, sweep
from router_models.features.spec import FeatureSpec
from router_models.router import Featurize, TrainedRouter
from router_models.scorers import BlendScorer, ClusterScorer, ProbeScorer, Scorer, brier, holdout_mask, weighted_sum
from router_models.scorers.registry import presets
from router_models.train.calibration import DEFAULT_PRESETS, Calibrator, Method, PresetTarget, ece, fit_presets

if TYPE_CHECKING:
    from router_models.data import RoutingDataset
    from router_models.features.pooling import PromptFeatures

__all__ = [
    "Candidate",
    "Selection",
    "cross_fit",
    "default_candidates",
    "ensemble_counts",
    "fit_router",
    "select_scorer",
]


class Candidate(NamedTuple):
    """A scorer to try: how to make a fresh one, and which features it reads ("sae", "dense" or "all")."""

    make: Callable[[], Scorer]
    features: str


def default_candidates() -> dict[str, Candidate]:
    """Every registered scorer preset with the ``candidate`` role (:mod:`router_models.scorers.registry`): on SAE
    latents the top-k sparse probe and kNN; on the dense state a probe, kNN and UniRoute clusters."""
    return {p.name: Candidate(partial(kind.make, p), p.features) for p, kind in presets("candidate")}


@dataclass
class Selection:
    """The chosen scorer (refit on all train rows), every candidate's cross-validated metrics, and the
    winner's out-of-fold predictions of every train row."""

    name: str
    scorer: Any
    features: str
    table: dict[str, dict[str, Any]]
    oof_quality: np.ndarray  # [n, m]


def _rows(features: Mapping[str, Any], kind: str, rows: np.ndarray | None) -> Any:
    """The matrix a candidate reads (the whole mapping for "all"), restricted to ``rows`` unless None."""
    if kind != "all" and kind not in features:
        raise ValueError(f"unknown feature kind {kind!r}; available: {sorted(features)} or 'all'")
    if kind == "all":
        return dict(features) if rows is None else {k: v[rows] for k, v in features.items()}
    return features[kind] if rows is None else features[kind][rows]


def cross_fit(
    cand: Candidate, features: Mapping[str, Any], scores: np.ndarray, folds: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Out-of-fold predictions [n, m]: row i predicted by a fit on the rows outside fold ``folds[i]``."""
    out = np.full(scores.shape, np.nan)
    for f in np.unique(folds):
        held = folds == f
        inner = holdout_mask(int((~held).sum()), seed=seed)
        scorer = cand.make().fit(_rows(features, cand.features, ~held), scores[~held], inner)
        out[held] = scorer.predict_quality(_rows(features, cand.features, held))
    return out


def ensemble_counts(
    preds: Mapping[str, np.ndarray], objective: Callable[[np.ndarray], float], max_steps: int = 20
) -> tuple[Counter[str], float]:
    """Greedy ensemble selection with replacement: counts per candidate and the objective of their average.

    Starts from the best single candidate; each step adds the candidate that raises ``objective`` of the
    running average the most, and stops when none raises it (or after ``max_steps`` additions).
    """
    single = {name: objective(q) for name, q in preds.items()}
    first = max(single, key=lambda n: single[n])
    counts, total, best = Counter({first: 1}), preds[first].copy(), single[first]
    for _ in range(max_steps):
        size = sum(counts.values())
        trials = {name: objective((total + q) / (size + 1)) for name, q in preds.items()}
        name = max(trials, key=lambda n: trials[n])
        if trials[name] <= best + 1e-12:
            break
        counts[name] += 1
        total += preds[name]
        best = trials[name]
    return counts, best


def select_scorer(
    candidates: Mapping[str, Candidate],
    features: Mapping[str, Any],
    scores: np.ndarray,
    costs: np.ndarray,
    folds: np.ndarray,
    pred_cost: np.ndarray,
    models: tuple[str, ...],
    *,
    val: np.ndarray | None = None,
    ensemble: bool = True,
    seed: int = 0,
) -> Selection:
    """Choose among ``candidates`` by cross-validated routing AUC (see module docstring).

    features: kind → matrix with train rows only [n, ·]; scores, costs: [n, m]; folds: [n] fold ids;
    pred_cost: [m] or [n, m] predicted cost; val: [n] bool hyperparameter rows for the final refit
    (default: a seeded 20% hold-out).
    """
    folds = np.asarray(folds)
    n = scores.shape[0]
    if folds.shape != (n,) or len(np.unique(folds)) < 2:
        raise ValueError(f"select_scorer needs fold ids [n={n}] with at least 2 folds; got shape {folds.shape}")
    val = holdout_mask(n, seed=seed) if val is None else np.asarray(val, dtype=bool)
    scored = ~np.isnan(scores).all(axis=1)  # a prompt with no result at all cannot be routed
    cost_s = np.broadcast_to(np.asarray(pred_cost, dtype=np.float64), scores.shape)[scored]
    refs = reference_points(scores[scored], costs[scored], models)

    def metrics(q: np.ndarray) -> dict[str, Any]:
        m = curve_metrics(sweep(q[scored], cost_s, scores[scored], costs[scored], models=models), refs)
        return {"cv_auc": m["auc"], "cv_peak_quality": m["peak_quality"], "cv_cost_at_95": m["cost_at_95"]}

    def auc(q: np.ndarray) -> float:
        return float(metrics(q)["cv_auc"])

    table: dict[str, dict[str, Any]] = {}
    preds: dict[str, np.ndarray] = {}
    for name, cand in candidates.items():
        started = time.perf_counter()
        preds[name] = cross_fit(cand, features, scores, folds, seed)
        table[name] = {"features": cand.features, **metrics(preds[name]), "cv_brier": brier(preds[name], scores)}
        table[name]["fit_seconds"] = round(time.perf_counter() - started, 3)
    best = max(table, key=lambda k: (table[k]["cv_auc"], -table[k]["cv_brier"]))
    cands = dict(candidates)
    if ensemble and len(preds) >= 2:
        counts, _ = ensemble_counts(preds, auc)
        if len(counts) >= 2:
            names = sorted(counts, key=lambda k: (-counts[k], k))
            weights = tuple(counts[k] / sum(counts.values()) for k in names)
            q = weighted_sum(weights, [preds[k] for k in names])
            parts = [cands[k] for k in names]
            kinds = tuple(c.features for c in parts)

            def make() -> BlendScorer:
                return BlendScorer(tuple(c.make() for c in parts), kinds, weights, "ensemble")

            cands["ensemble"] = Candidate(make, "all")
            preds["ensemble"] = np.asarray(q)
            table["ensemble"] = {"features": "all", **metrics(preds["ensemble"]), "cv_brier": brier(q, scores)}
            table["ensemble"]["weights"] = dict(zip(names, weights, strict=True))
            if table["ensemble"]["cv_auc"] > table[best]["cv_auc"]:
                best = "ensemble"
    winner = cands[best].make().fit(_rows(features, cands[best].features, None), scores, val)
    return Selection(best, winner, cands[best].features, table, preds[best])


def _component(
    kind: type,
    needs: str | None,
    selection: Selection,
    cand: Candidate | None,
    features: Mapping[str, Any],
    scores: np.ndarray,
    val: np.ndarray,
) -> tuple[Any, str | None]:
    """The router's probe / clusters: the winner (or a blend part) if it is one reading the ``needs``
    feature kind (None = any), else the candidate refit on all train rows, else None."""
    s = selection.scorer
    pieces = list(zip(s.parts, s.kinds, strict=True)) if isinstance(s, BlendScorer) else [(s, selection.features)]
    for part, feat in pieces:
        if isinstance(part, kind) and needs in (None, feat):
            return copy.deepcopy(part), feat
    if cand is None or needs not in (None, cand.features):
        return None, None
    return cand.make().fit(_rows(features, cand.features, None), scores, val), cand.features


def fit_router(
    features: PromptFeatures,
    train: RoutingDataset,
    val: np.ndarray | None = None,
    *,
    spec: FeatureSpec | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    labels: dict[str, Any] | None = None,
    candidates: Mapping[str, Candidate] | None = None,
    ensemble: bool = True,
    folds: int | Literal["task"] = 5,
    calibration: Method | Literal["auto"] = "auto",
    presets: Mapping[str, PresetTarget] = DEFAULT_PRESETS,
    default_preset: str = "balanced",
    cost_per_cluster: bool = True,
    featurize: Featurize | None = None,
    seed: int = 0,
) -> tuple[TrainedRouter, dict[str, Any]]:
    """Cross-fit candidates, select by CV AUC, calibrate and set presets on out-of-fold predictions.

    features: rows aligned with ``train`` (train split only). val: [n] bool, the hyperparameter rows of the
    final refit (default :func:`router_models.data.validation_split`). folds: k of the k-fold selection
    (:func:`router_models.data.cv_folds`), or "task" for one fold per task family
    (:func:`router_models.data.task_folds`): candidates, ensemble weights, calibration and presets are then
    chosen on predictions for tasks the fit never saw, which is what a router meets in traffic.
    The router's ``probe`` (explanations, onboarding) and ``clusters``
    (per-cluster costs, onboarding) come from the winner when it is or contains one, else from the ``probe`` /
    ``cluster`` candidates refit on all train rows.
    """
    from router_models.data import cv_folds, task_folds, validation_split

    outside = sorted(set(train.splits) - {"train"})
    if outside:
        raise ValueError(f"fit_router takes train rows only; {train.name} has split(s) {outside}")
    n, models = train.n_prompts, tuple(train.models)
    if features.sparse.shape[0] != n or len(features.dense) != n:
        raise ValueError(f"features have {features.sparse.shape[0]} rows but {train.name} has {n} prompts")
    val = validation_split(train)[1] if val is None else np.asarray(val, dtype=bool)
    if val.shape != (n,):
        raise ValueError(f"val mask has shape {val.shape}, expected ({n},)")
    fold_ids = task_folds(train) if folds == "task" else cv_folds(train, folds, seed)
    views = {"sae": features.sparse, "dense": features.dense}
    texts = [str(p) for p in train.prompts]
    cands = dict(candidates or default_candidates())
    pred_cost = CostModel.fit(models, texts, train.costs, prices).predict(texts)
    sel = select_scorer(
        cands, views, train.scores, train.costs, fold_ids, pred_cost, models, val=val, ensemble=ensemble, seed=seed
    )
    calib_table: dict[str, float] = {}
    if calibration == "auto":
        calibration, calib_table = Calibrator.choose(
            sel.oof_quality, train.scores, train.costs, pred_cost, models, groups=fold_ids if folds == "task" else None
        )
    calibrator = Calibrator.fit(sel.oof_quality, train.scores, calibration)
    q_oof = calibrator.apply(sel.oof_quality)
    ok = ~np.isnan(train.scores).all(axis=1)
    vs, vc = train.scores[ok], train.costs[ok]
    preset_table = fit_presets(q_oof[ok], pred_cost[ok], vs, vc, models, presets, default_preset)
    probe, _ = _component(ProbeScorer, "sae", sel, cands.get("probe"), views, train.scores, val)
    clusters, cluster_features = _component(ClusterScorer, None, sel, cands.get("cluster"), views, train.scores, val)
    groups, n_groups = None, 1
    if cost_per_cluster and clusters is not None and clusters.centroids is not None:
        groups, n_groups = clusters.assign(views[cluster_features or "dense"]), len(clusters.centroids)
    costs = CostModel.fit(models, texts, train.costs, prices, groups=groups, n_groups=n_groups)
    report = {
        "selected": sel.name,
        "selection": (
            "task-grouped cross-validated routing AUC on the train rows (one fold per task family)"
            if folds == "task"
            else f"{folds}-fold cross-validated routing AUC on the train rows"
        ),
        "candidates": sel.table,
        "calibration": {
            "method": calibration,
            "cross_fitted_auc": calib_table,
            "ece_before": ece(sel.oof_quality, train.scores),
            "ece_after_in_sample": ece(q_oof, train.scores),
        },
        "data": {"dataset": train.name, "fingerprint": train.fingerprint(), "n_train": n, "folds": folds},
    }
    router = TrainedRouter(
        models=models,
        n_base=len(models),
        scorer=sel.scorer,
        scorer_name=sel.name,
        scorer_features=sel.features,
        calibrator=calibrator,
        costs=costs,
        preset_table=preset_table,
        probe=probe,
        clusters=clusters,
        cluster_features=cluster_features or "dense",
        cost_groups=groups is not None,
        feature_widths={"sae": int(views["sae"].shape[1]), "dense": int(views["dense"].shape[1])},
        prices=dict(prices or {}),
        spec=spec,
        labels=labels,
        report=report,
        featurize=featurize,
    )
    return router, report

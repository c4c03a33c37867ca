"""Training a router: pick the scorer by validation routing AUC, calibrate it, set presets.

In:  features of the training prompts (:class:`~router_models.features.PromptFeatures`), the train split of a
     :class:`~router_models.data.RoutingDataset` (train rows only: test rows are never passed in), a
     validation mask over those rows, prices, candidate scorers.
Out: :func:`select_scorer` → :class:`Selection` (the winner refit on all train rows, and every candidate's
     validation metrics); :func:`fit_router` → a :class:`~router_models.artifact.TrainedRouter` and a report.

Selection protocol. Each candidate is fitted on the fit rows (train minus val), choosing its own
hyperparameters on a seeded inner hold-out of those rows, and predicts the val rows. It is scored by the
area under its quality–cost curve on val (:func:`router_models.evaluate.curve_metrics`, reference points
from the val rows), because that is what routing is judged by; the val Brier score breaks ties. With
``blend`` the two best candidates are also blended (weight chosen on the inner hold-out) and compared the
same way. The winner is then refit on every train row with ``val`` as its validation rows.

Then, on the winner's val predictions (from the fit that never saw val): per-model calibration
(:class:`~router_models.calibration.Calibrator`) and presets (:func:`~router_models.calibration.fit_presets`).
Calibration maps and presets are fitted on the same val rows, so the reported val ECE after calibration is
in-sample; the test split (``TrainedRouter.evaluate``) is the honest check.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from router_models.artifact import FeatureSpec, Featurize, TrainedRouter
from router_models.calibration import DEFAULT_PRESETS, Calibrator, Method, PresetTarget, ece, fit_presets
from router_models.costs import CostModel, ModelPrice
from router_models.evaluate import curve_metrics, reference_points, sweep
from router_models.scorers import BlendScorer, ClusterScorer, KNNScorer, ProbeScorer, Scorer, brier, holdout_mask

if TYPE_CHECKING:
    from router_models.data import RoutingDataset
    from router_models.features import PromptFeatures

__all__ = ["Candidate", "Selection", "default_candidates", "fit_router", "select_scorer"]


class Candidate(NamedTuple):
    """A scorer to try: how to make a fresh one, and which features it reads ("sae", "dense" or "all")."""

    make: Callable[[], Scorer]
    features: str


def default_candidates() -> dict[str, Candidate]:
    """probe (top-k sparse probe on SAE features), dense probe, kNN and UniRoute clusters on dense features."""
    return {
        "probe": Candidate(lambda: ProbeScorer(top_k=(16, 64, 256, 1024)), "sae"),
        "dense": Candidate(lambda: ProbeScorer(name="dense"), "dense"),
        "knn": Candidate(KNNScorer, "dense"),
        "cluster": Candidate(ClusterScorer, "dense"),
    }


@dataclass
class Selection:
    """The chosen scorer (refit on all train rows) and every candidate's validation metrics."""

    name: str
    scorer: Any
    features: str
    table: dict[str, dict[str, Any]]
    val_quality: np.ndarray  # [n_val, m] the winner's predictions for the val rows, fitted without them


def _rows(features: Mapping[str, Any], kind: str, rows: np.ndarray | None) -> Any:
    """The matrix a candidate reads (the whole mapping for "all"), restricted to ``rows`` unless None."""
    if kind != "all" and kind not in features:
        raise ValueError(f"unknown feature kind {kind!r}; available: {sorted(features)} or 'all'")
    if kind == "all":
        return dict(features) if rows is None else {k: v[rows] for k, v in features.items()}
    return features[kind] if rows is None else features[kind][rows]


def select_scorer(
    candidates: Mapping[str, Candidate],
    features: Mapping[str, Any],
    scores: np.ndarray,
    costs: np.ndarray,
    val: np.ndarray,
    pred_cost: np.ndarray,
    models: tuple[str, ...],
    *,
    blend: bool = True,
    seed: int = 0,
) -> Selection:
    """Choose among ``candidates`` by routing AUC on the ``val`` rows (see module docstring).

    features: kind → matrix with train rows only [n, ·]; scores, costs: [n, m]; val: [n] bool;
    pred_cost: [m] or [n, m] predicted cost (from a cost model fitted without the val rows).
    """
    val = np.asarray(val, dtype=bool)
    if not val.any() or val.all():
        raise ValueError("select_scorer needs both fit rows and val rows")
    fit = ~val
    inner = holdout_mask(int(fit.sum()), seed=seed)
    scored = val & ~np.isnan(scores).all(axis=1)  # a val prompt with no result at all cannot be routed
    cost_val = np.broadcast_to(np.asarray(pred_cost, dtype=np.float64), scores.shape)[scored]
    refs = reference_points(scores[scored], costs[scored], models)
    cands = dict(candidates)
    table: dict[str, dict[str, Any]] = {}
    preds: dict[str, np.ndarray] = {}

    def trial(name: str, cand: Candidate) -> None:
        started = time.perf_counter()
        scorer = cand.make().fit(_rows(features, cand.features, fit), scores[fit], inner)
        preds[name] = np.asarray(scorer.predict_quality(_rows(features, cand.features, val)))
        q = preds[name][scored[val]]
        curve = sweep(q, cost_val, scores[scored], costs[scored], models=models)
        metrics = curve_metrics(curve, refs)
        table[name] = {
            "features": cand.features,
            "val_auc": metrics["auc"],
            "val_peak_quality": metrics["peak_quality"],
            "val_cost_at_95": metrics["cost_at_95"],
            "val_brier": brier(preds[name], scores[val]),
            "fit_seconds": round(time.perf_counter() - started, 3),
        }

    for name, cand in cands.items():
        trial(name, cand)
    ranked = sorted((n for n in cands if cands[n].features != "all"), key=lambda n: -table[n]["val_auc"])
    if blend and len(ranked) >= 2:
        a, b = ranked[:2]
        ca, cb = cands[a], cands[b]
        cands["blend"] = Candidate(lambda: BlendScorer((ca.make(), cb.make()), (ca.features, cb.features)), "all")
        trial("blend", cands["blend"])
        table["blend"]["parts"] = [a, b]
    best = max(table, key=lambda n: (table[n]["val_auc"], -table[n]["val_brier"]))
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
    blend: bool = True,
    calibration: Method | Literal["auto"] = "auto",
    presets: Mapping[str, PresetTarget] = DEFAULT_PRESETS,
    default_preset: str = "balanced",
    cost_per_cluster: bool = True,
    featurize: Featurize | None = None,
    seed: int = 0,
) -> tuple[TrainedRouter, dict[str, Any]]:
    """Fit candidates, select by val AUC, calibrate and set presets on val; returns (router, report).

    features: rows aligned with ``train`` (train split only). val: [n] bool (default
    :func:`router_models.data.validation_split`). The router's ``probe`` (explanations, onboarding) and
    ``clusters`` (per-cluster costs, onboarding) come from the winner when it is one, else from the
    ``probe`` / ``cluster`` candidates refit on all train rows.
    """
    from router_models.data import validation_split

    outside = sorted(set(train.splits) - {"train"})
    if outside:
        raise ValueError(f"fit_router takes train rows only; {train.name} has split(s) {outside}")
    n, models = train.n_prompts, tuple(train.models)
    if features.sparse.shape[0] != n or len(features.dense) != n:
        raise ValueError(f"features have {features.sparse.shape[0]} rows but {train.name} has {n} prompts")
    val = validation_split(train)[1] if val is None else np.asarray(val, dtype=bool)
    if val.shape != (n,):
        raise ValueError(f"val mask has shape {val.shape}, expected ({n},)")
    views = {"sae": features.sparse, "dense": features.dense}
    texts = [str(p) for p in train.prompts]
    cands = dict(candidates or default_candidates())
    fit_costs = CostModel.fit(models, [texts[i] for i in np.flatnonzero(~val)], train.costs[~val], prices)
    pred_cost = fit_costs.predict(texts)
    sel = select_scorer(cands, views, train.scores, train.costs, val, pred_cost, models, blend=blend, seed=seed)
    calib_table: dict[str, float] = {}
    if calibration == "auto":
        calibration, calib_table = Calibrator.choose(
            sel.val_quality, train.scores[val], train.costs[val], pred_cost[val], models
        )
    calibrator = Calibrator.fit(sel.val_quality, train.scores[val], calibration)
    q_val = calibrator.apply(sel.val_quality)
    ok = ~np.isnan(train.scores[val]).all(axis=1)
    vs, vc, pc = train.scores[val][ok], train.costs[val][ok], pred_cost[val][ok]
    preset_table = fit_presets(q_val[ok], pc, vs, vc, models, presets, default_preset)
    probe, _ = _component(ProbeScorer, "sae", sel, cands.get("probe"), views, train.scores, val)
    clusters, cluster_features = _component(ClusterScorer, None, sel, cands.get("cluster"), views, train.scores, val)
    groups, n_groups = None, 1
    if cost_per_cluster and clusters is not None and clusters.centroids is not None:
        groups, n_groups = clusters.assign(views[cluster_features or "dense"]), len(clusters.centroids)
    costs = CostModel.fit(models, texts, train.costs, prices, groups=groups, n_groups=n_groups)
    report = {
        "selected": sel.name,
        "candidates": sel.table,
        "calibration": {
            "method": calibration,
            "cross_fitted_val_auc": calib_table,
            "val_ece_before": ece(sel.val_quality, train.scores[val]),
            "val_ece_after_in_sample": ece(q_val, train.scores[val]),
        },
        "data": {"dataset": train.name, "fingerprint": train.fingerprint(), "n_train": n, "n_val": int(val.sum())},
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

"""Onboarding: add a model to a trained router from its results on a small labelled set, retraining nothing else.

In:  a :class:`~router_models.artifact.load.TrainedRouter`, the new model's name, features of a few hundred prompts
     (:class:`~router_models.features.pooling.PromptFeatures`) with its scores on them (NaN = no result), and its
     prices (or observed costs on those prompts).
Out: a new router serving one more model; the other models' predictions, the calibration maps and the
     presets are unchanged (presets are λ values, not re-targeted).

As in UniRoute (Jitkrittum et al. 2025, §4.2), a model is represented by its per-cluster mean score over the
router's existing k-means clusters, shrunk toward its own global mean with the clusters' prior count, so
clusters it was barely tested on fall back to its average. With at least ``min_probe_rows`` results of both
outcomes it also gets a probe row on the SAE features (the router's standardization kept); which of the two
serves it is decided on a seeded hold-out of its prompts by Brier score. Its quality is not calibrated
(there is no validation data beyond what it was fitted on).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.decide.costs import ModelPrice
from router_models.router import TrainedRouter
from router_models.scorers import brier, holdout_mask

if TYPE_CHECKING:
    from router_models.features.pooling import PromptFeatures

__all__ = ["onboard"]


def onboard(
    router: TrainedRouter,
    name: str,
    features: PromptFeatures,
    scores: np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    costs: np.ndarray | None = None,
    price: ModelPrice | None = None,
    min_probe_rows: int = 200,
    min_rows: int = 20,
    seed: int = 0,
) -> TrainedRouter:
    """A copy of ``router`` that also serves ``name``; scores, costs: [n] aligned with ``features``/``texts``.

    The cost side needs ``price`` (token prices: expected output tokens from ``texts``/``costs`` if given,
    else the other models' median) or observed ``costs`` with ``texts`` (mean cost per call).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_obs = int((~np.isnan(s)).sum())
    if name in router.models:
        raise ValueError(f"model {name!r} is already served by this router")
    if router.probe is None and router.clusters is None:
        raise ValueError("this router keeps neither clusters nor an SAE probe, so it cannot onboard models")
    if features.sparse.shape[0] != len(s):
        raise ValueError(f"features have {features.sparse.shape[0]} rows but scores has {len(s)}")
    if n_obs < min_rows:
        raise ValueError(f"model {name!r}: {n_obs} labelled prompts; onboarding needs at least {min_rows}")
    views = router.feature_views(features)
    probe, clusters = copy.deepcopy(router.probe), copy.deepcopy(router.clusters)
    fit_probe = probe is not None and n_obs >= min_probe_rows and bool(np.ptp(s[~np.isnan(s)]) > 0)
    holdout = _holdout_brier(router, views, s, fit_probe, seed) if fit_probe and clusters is not None else {}
    if clusters is not None:
        clusters.add_model(views[router.cluster_features], s)
    if probe is not None:
        if fit_probe:
            probe.add_model(views["sae"], s, holdout_mask(len(s), seed=seed))
        else:
            probe.add_constant(float(np.nanmean(s)))
    if clusters is None or (fit_probe and holdout.get("probe", np.inf) < holdout.get("cluster", np.inf)):
        source = "probe"
    else:
        source = "cluster"
    calibrator = copy.deepcopy(router.calibrator)
    calibrator.add_identity()
    report = copy.deepcopy(router.report)
    report.setdefault("onboarded", {})[name] = {
        "n_prompts": n_obs,
        "mean_score": float(np.nanmean(s)),
        "source": source,
        "holdout_brier": holdout,
    }
    return replace(
        router,
        models=(*router.models, name),
        probe=probe,
        clusters=clusters,
        calibrator=calibrator,
        costs=router.costs.add_model(name, price, texts, costs),
        onboarded={**router.onboarded, name: source},
        prices={**router.prices, **({name: price} if price is not None else {})},
        report=report,
        _version=None,
    )


def _holdout_brier(
    router: TrainedRouter, views: dict[str, Any], s: np.ndarray, fit_probe: bool, seed: int
) -> dict[str, float]:
    """Brier score of the probe row and of the cluster profile on a seeded quarter of the new prompts."""
    hold = holdout_mask(len(s), 0.25, seed) & ~np.isnan(s)
    train = ~hold
    out: dict[str, float] = {}
    if router.clusters is not None:
        c = copy.deepcopy(router.clusters)
        j = c.add_model(views[router.cluster_features][train], s[train])
        out["cluster"] = brier(c.predict_quality(views[router.cluster_features][hold])[:, j], s[hold])
    if fit_probe and router.probe is not None:
        p = copy.deepcopy(router.probe)
        j = p.add_model(views["sae"][train], s[train], holdout_mask(int(train.sum()), seed=seed))
        out["probe"] = brier(p.predict_quality(views["sae"][hold])[:, j], s[hold])
    return out

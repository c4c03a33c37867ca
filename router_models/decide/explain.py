"""Why a router chose one model over the runner-up, in terms of SAE latents.

In:  one prompt's :class:`~router_models.decide.engine.PromptScores` (predicted quality and cost of every model, its
     pooled SAE feature row, and the cluster assignment in ``extras`` when the router has clusters), the
     chosen and runner-up models, a fitted :class:`~router_models.scorers.ProbeScorer` over those features,
     the feature labels JSON (:func:`router_models.features.pooling.label_features`), and, for the cited
     latents, the served predictions of the prompt with each candidate latent deleted (computed by the router:
     :meth:`router_models.router.TrainedRouter.rescore`).
Out: JSON-able pieces: both models' predicted quality and cost, the margins, the λ range over which the chosen
     model beats the runner-up, the latents with their *measured* effect on the served margins
     (:func:`measured_effects`; which ones to measure: :func:`candidate_latents`), and the SAE probe's own
     logit decomposition.

Cited latents are ranked by what deleting them does to the served decision (every scorer part, calibration
and cost model see the deletion), not by a model's weights: in an ensemble a latent that dominates the probe's
logit may barely move the blended quality, and may move it the other way (benchmarks/RESULTS.md §13).

For the probe the logit difference also decomposes exactly, kept as the secondary ``probe`` field. With
standardized features x̃_f = (x_f − μ_f) / σ_f and per-model weights w, biases b:

    logit_chosen − logit_runner = Σ_f x̃_f (w_chosen,f − w_runner,f) + (b_chosen − b_runner)

so contribution_f = x̃_f (w_chosen,f − w_runner,f). We list the largest |contribution_f| and report the rest as
one sum, so the listed numbers add up to the logit difference. A feature that is *absent* (x_f = 0) can still
contribute through −μ_f/σ_f: not firing where it usually fires is evidence too. The probe explains its own
(uncalibrated) logits only. For a cluster router the nearest clusters and both models' per-cluster mean scores
are the explanation. For an ensemble, each part's prediction for the two models and its weight show which view
(SAE probe, kNN, clusters) carried the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from router_models.decide.engine import PromptScores, lambda_interval
from router_models.scorers import ClusterScorer, ProbeScorer

__all__ = [
    "CITED",
    "Contributions",
    "candidate_latents",
    "cluster_summary",
    "ensemble_summary",
    "explain_pair",
    "measured_effects",
    "probe_contributions",
]


CITED = 8  # latents an explanation cites at most (the screened ones ranked by measured effect at the decision's λ)


@dataclass(frozen=True)
class Contributions:
    """Decomposition of logit_chosen − logit_runner for one prompt. ``values``, ``standardized``: [d]."""

    values: np.ndarray
    standardized: np.ndarray
    bias: float
    logit_difference: float


def probe_contributions(probe: ProbeScorer, x: Any, chosen: int, runner_up: int | None) -> Contributions:
    """Per-feature contributions to the chosen model's logit minus the runner-up's (or its own logit alone).

    x: one feature row [d] (dense or 1×d sparse).
    """
    assert probe.coef is not None and probe.intercept is not None and probe.mean_ is not None, "fit first"
    assert probe.scale_ is not None
    row = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64).reshape(1, -1)
    xs = (row[0] - probe.mean_) / probe.scale_
    dw = probe.coef[chosen] - (probe.coef[runner_up] if runner_up is not None else 0.0)
    db = probe.intercept[chosen] - (probe.intercept[runner_up] if runner_up is not None else 0.0)
    z = probe.logits(row)[0]
    diff = z[chosen] - (z[runner_up] if runner_up is not None else 0.0)
    return Contributions(xs * dw, xs, float(db), float(diff))


def _feature_name(index: int, d_sae: int | None, pooling: Sequence[str]) -> tuple[int, str | None]:
    """(latent id, pooling block) of a pooled feature index: blocks are [max | mean] of width d_sae."""
    if not d_sae:
        return index, None
    block = index // d_sae
    return index % d_sae, pooling[block] if block < len(pooling) else None


def _top_features(
    c: Contributions,
    x: np.ndarray,
    labels: Mapping[str, Any] | None,
    d_sae: int | None,
    pooling: Sequence[str],
    top_n: int,
) -> dict[str, Any]:
    order = np.argsort(-np.abs(c.values), kind="stable")[:top_n]
    order = order[c.values[order] != 0]
    latents = (labels or {}).get("latents", {})
    feats = []
    for i in order:
        latent, pool = _feature_name(int(i), d_sae, pooling)
        info = latents.get(str(latent), {})
        feats.append(
            {
                "feature": int(i),
                "latent": latent,
                "pooling": pool,
                "label": info.get("label"),
                "activation": float(x[i]),
                "standardized": float(c.standardized[i]),
                "contribution": float(c.values[i]),
            }
        )
    rest = float(c.values.sum() - c.values[order].sum())
    return {
        "logit_difference": c.logit_difference,
        "bias_difference": c.bias,
        "other_features": rest,
        "features": feats,
    }


def candidate_latents(x: np.ndarray, d_sae: int, n: int, contributions: np.ndarray | None = None) -> np.ndarray:
    """Up to ``n`` active latents of the pooled row ``x`` [d_sae · P] whose deletion is worth measuring: taken in
    turn from the largest pooled activation (summed over blocks) and, given the probe's contributions [d_sae · P],
    the largest |contribution| (summed over blocks), so that neither view's strongest latents are missed."""
    blocks = np.asarray(x, dtype=np.float64).reshape(-1, d_sae)
    active = np.flatnonzero((blocks != 0).any(axis=0))
    if active.size <= n:
        return active
    orders = [active[np.argsort(-blocks[:, active].sum(axis=0), kind="stable")]]
    if contributions is not None:
        weight = np.abs(np.asarray(contributions).reshape(-1, d_sae)).sum(axis=0)[active]
        orders.insert(0, active[np.argsort(-weight, kind="stable")])
    picked: dict[int, None] = {}
    for rank in range(active.size):
        for order in orders:
            picked.setdefault(int(order[rank]), None)
        if len(picked) >= n:
            break
    return np.array(list(picked)[:n], dtype=np.int64)


def measured_effects(
    quality: np.ndarray,
    cost: np.ndarray,
    chosen: int,
    runner_up: int | None,
    latents: Sequence[int] | np.ndarray,
    x: np.ndarray,
    labels: Mapping[str, Any] | None,
    d_sae: int,
    pooling: Sequence[str],
    contributions: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One entry per deleted latent, most negative Δ quality margin first.

    quality, cost: [1 + b, m] served predictions, row 0 with nothing deleted and row 1 + k with ``latents[k]``
    deleted. Δ = edited − unedited, of (chosen − runner-up) (of the chosen model alone without a runner-up); the
    utility margin's Δ is Δq − λ·Δc, added by :func:`router_models.decide.engine.explain_decision`."""
    q, c = np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    qm = q[:, chosen] - (q[:, runner_up] if runner_up is not None else 0.0)
    cm = c[:, chosen] - (c[:, runner_up] if runner_up is not None else 0.0)
    info = (labels or {}).get("latents", {})
    blocks = np.asarray(x, dtype=np.float64).reshape(-1, d_sae)
    per_latent = None if contributions is None else np.asarray(contributions).reshape(-1, d_sae).sum(axis=0)
    out = []
    for k, latent in enumerate(int(i) for i in latents):
        out.append(
            {
                "latent": latent,
                "label": info.get(str(latent), {}).get("label"),
                "activation": {pool: float(blocks[b, latent]) for b, pool in enumerate(pooling)},
                "delta_quality_margin": float(qm[1 + k] - qm[0]),
                "delta_cost_margin": float(cm[1 + k] - cm[0]),
                "probe_contribution": None if per_latent is None else float(per_latent[latent]),
            }
        )
    return sorted(out, key=lambda f: f["delta_quality_margin"])


def cluster_summary(
    clusters: ClusterScorer,
    nearest: Sequence[tuple[int, float]],
    models: Sequence[str],
    chosen: int,
    runner: int | None,
) -> list[dict[str, Any]]:
    """Per nearest cluster (id, weight): both models' per-cluster mean score and result counts."""
    assert clusters.profile is not None and clusters.counts is not None
    shown = [chosen] if runner is None else [chosen, runner]
    return [
        {
            "cluster": int(k),
            "weight": float(w),
            "mean_score": {models[j]: float(clusters.profile[k, j]) for j in shown},
            "n_results": {models[j]: int(clusters.counts[k, j]) for j in shown},
        }
        for k, w in nearest
    ]


def ensemble_summary(
    parts: Sequence[Sequence[Any]], models: Sequence[str], chosen: int, runner: int | None
) -> list[dict[str, Any]]:
    """Per ensemble part (name, feature kind, weight, its raw quality per base model): what it predicts for
    the two models. The served quality is the calibrated weighted sum of these."""
    shown = [chosen] if runner is None else [chosen, runner]
    out = []
    for name, kind, weight, quality in parts:
        q = {models[j]: float(quality[j]) for j in shown if j < len(quality)}  # onboarded models: not in parts
        out.append({"part": name, "features": kind, "weight": float(weight), "quality": q})
    return out


def explain_pair(
    models: Sequence[str],
    scores: PromptScores,
    chosen: str,
    runner_up: str | None,
    *,
    probe: ProbeScorer | None = None,
    clusters: ClusterScorer | None = None,
    labels: Mapping[str, Any] | None = None,
    d_sae: int | None = None,
    pooling: Sequence[str] = ("max", "mean"),
    top_n: int = 8,
) -> dict[str, Any]:
    """The explanation of one decision (see module docstring for the probe decomposition).

    ``scores.features`` must be the probe's feature row for the ``probe`` part; ``scores.extras["clusters"]``
    (a list of [cluster, weight]) feeds the ``clusters`` part.
    """
    models = list(models)
    for name in (chosen, runner_up):
        if name is not None and name not in models:
            raise ValueError(f"unknown model {name!r}; this router serves {models}")
    i, r = models.index(chosen), None if runner_up is None else models.index(runner_up)
    q, c = np.asarray(scores.quality, dtype=np.float64), np.asarray(scores.cost, dtype=np.float64)
    out: dict[str, Any] = {"chosen": {"model": chosen, "quality": float(q[i]), "cost": float(c[i])}, "runner_up": None}
    if r is not None:
        pair = np.zeros(len(models), dtype=bool)
        pair[[i, r]] = True
        out["runner_up"] = {"model": runner_up, "quality": float(q[r]), "cost": float(c[r])}
        out["quality_margin"], out["cost_margin"] = float(q[i] - q[r]), float(c[i] - c[r])
        out["pair_lambda_interval"] = list(lambda_interval(q, c, i, pair))
    if probe is not None and scores.features is not None:
        x = np.asarray(scores.features, dtype=np.float64).ravel()
        out["probe"] = _top_features(probe_contributions(probe, x, i, r), x, labels, d_sae, pooling, top_n)
    parts = scores.extras.get("ensemble")
    if parts:
        out["ensemble"] = ensemble_summary(parts, models, i, r)
    nearest = scores.extras.get("clusters")
    if clusters is not None and nearest:
        out["clusters"] = cluster_summary(clusters, [(int(k), float(w)) for k, w in nearest], models, i, r)
    return out

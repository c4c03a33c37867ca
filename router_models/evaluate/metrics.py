"""Routing-quality metrics: a router's quality–cost curve over a λ sweep, and the numbers drawn from it.

In:  predicted quality ``[n, m]`` and predicted cost (``[m]`` or ``[n, m]``) from a router, the true scores
     ``[n, m]`` (NaN where a model has no result on a prompt) and true costs ``[n, m]`` of a test split.
Out: the curve (λ, realized mean cost, realized mean quality, share of calls per model) and its metrics:

- ``peak_quality``: best realized mean quality over the sweep.
- ``quality_at_best_cost``: the curve's upper envelope at the best single model's mean cost.
- ``cost_at_95``: the smallest realized mean cost whose quality reaches 95% of the best single model's,
  divided by the best single model's mean cost (``inf`` if never reached). Realized sweep points only, no
  mixing credit.
- ``auc``: area under the upper envelope of the router's (cost, quality) points over
  [cheapest model's cost, best single model's cost], divided by best single quality × that range. The
  envelope is the concave hull, made non-decreasing: every point on it is reachable by randomly mixing two
  λ settings per request, and spending less than one's budget is always allowed. Below the router's own
  cheapest point the envelope is 0 (it cannot operate there). When the range is empty (every model costs the
  same, e.g. routerdc7) ``auc`` is the envelope at that cost divided by the best single quality.
- two-model data only, after RouteLLM (Ong et al. 2024, §5.1): ``apgr`` (average performance gap
  recovered over the share of calls to the strong model, the always-weak and always-strong anchors
  included) and ``cpt50`` / ``cpt80`` (the smallest share of strong calls reaching 50% / 80% PGR).

Reference points: ``cheapest`` and ``best_single`` (single models; only models with a result on every test
prompt qualify, since a deployment of one model must answer everything) and ``oracle`` (per prompt the
cheapest model with the top score); :func:`random_mixing` gives the straight line of random mixing between
cheapest and best single, with its metrics. A model without a result on a prompt is never chosen for it, by any router.

numpy only; the decision itself is :func:`router_models.decide.policy.argmax_utility`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_models.decide.policy import argmax_utility

__all__ = [
    "Curve",
    "Reference",
    "auc",
    "evaluate_router",
    "lambda_grid",
    "paired_bootstrap",
    "random_mixing",
    "reference_points",
    "reference_report",
    "sweep",
    "upper_envelope",
]


@dataclass(frozen=True)
class Reference:
    """A fixed operating point (a single model or the oracle)."""

    cost: float
    quality: float
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cost": self.cost, "quality": self.quality}
        if self.model is not None:
            out["model"] = self.model
        return out


@dataclass(frozen=True)
class Curve:
    """Realized operating points of a router over a λ sweep. All arrays are ``[k]`` except ``share``."""

    lambdas: np.ndarray
    cost: np.ndarray
    quality: np.ndarray
    share: np.ndarray  # [k, m] fraction of prompts routed to each model
    models: tuple[str, ...] = field(default=())

    def points(self) -> list[list[float]]:
        return [[float(c), float(q)] for c, q in zip(self.cost, self.quality, strict=True)]


def _as_matrix(cost: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(cost, dtype=np.float64), shape)


def lambda_grid(pred_q: np.ndarray, pred_c: np.ndarray, n_log: int = 120, n_breaks: int = 240) -> np.ndarray:
    """λ values from "always the best predicted quality" (0) to "always the cheapest" (above every breakpoint).

    A prompt's choice between models i and j can only change at λ = (q_i − q_j) / (c_i − c_j) with both
    differences positive. The grid is 0, a log grid spanning those breakpoints with a factor-2 margin each
    side, and quantiles of the breakpoints themselves so dense regions are resolved.
    """
    q = np.asarray(pred_q, dtype=np.float64)
    c = _as_matrix(pred_c, q.shape)
    if q.shape[0] > 2000:  # breakpoint range from a deterministic sample keeps this O(2000·m²)
        rows = np.linspace(0, q.shape[0] - 1, 2000).astype(int)
        q, c = q[rows], c[rows]
    with np.errstate(invalid="ignore"):  # -inf (never-chosen models) minus -inf: masked out just below
        dq = q[:, :, None] - q[:, None, :]
        dc = c[:, :, None] - c[:, None, :]
    mask = (dq > 0) & (dc > 0) & np.isfinite(dq) & np.isfinite(dc)
    breaks = np.sort(dq[mask] / dc[mask])
    if breaks.size == 0:
        return np.zeros(1)
    lo, hi = breaks[0] / 2, breaks[-1] * 2
    log_part = np.geomspace(lo, hi, n_log)
    quant = breaks[np.linspace(0, breaks.size - 1, min(n_breaks, breaks.size)).astype(int)]
    return np.unique(np.concatenate([[0.0], log_part, quant]))


def sweep(
    pred_q: np.ndarray,
    pred_c: np.ndarray,
    true_q: np.ndarray,
    true_c: np.ndarray,
    lambdas: np.ndarray | None = None,
    models: tuple[str, ...] = (),
) -> Curve:
    """Route every prompt at each λ and record realized mean cost and quality.

    pred_q, true_q, true_c: [n, m]; pred_c: [m] or [n, m]. Models whose true score is NaN on a prompt are
    not allowed for it.
    """
    true_q = np.asarray(true_q, dtype=np.float64)
    pred_q = np.nan_to_num(np.asarray(pred_q, dtype=np.float64), nan=-np.inf)
    allowed = ~np.isnan(true_q)
    if not allowed.any(axis=1).all():
        raise ValueError("every test prompt needs a true score from at least one model")
    lams = lambda_grid(pred_q, pred_c) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    n, m = true_q.shape
    rows = np.arange(n)
    cost, quality, share = np.empty(len(lams)), np.empty(len(lams)), np.empty((len(lams), m))
    for i, lam in enumerate(lams):
        idx = argmax_utility(pred_q, pred_c, float(lam), allowed)
        cost[i] = np.asarray(true_c, dtype=np.float64)[rows, idx].mean()
        quality[i] = true_q[rows, idx].mean()
        share[i] = np.bincount(idx, minlength=m) / n
    return Curve(lams, cost, quality, share, tuple(models))


def reference_points(true_q: np.ndarray, true_c: np.ndarray, models: tuple[str, ...]) -> dict[str, Reference]:
    """Cheapest and best single model (among models scored on every prompt) and the oracle."""
    true_q = np.asarray(true_q, dtype=np.float64)
    true_c = np.asarray(true_c, dtype=np.float64)
    complete = ~np.isnan(true_q).any(axis=0)
    eligible = np.flatnonzero(complete) if complete.any() else np.arange(true_q.shape[1])
    mean_q = np.nanmean(true_q[:, eligible], axis=0)
    mean_c = np.nanmean(np.where(np.isnan(true_q), np.nan, true_c)[:, eligible], axis=0)
    cheap = eligible[np.lexsort((-mean_q, mean_c))[0]]
    best = eligible[np.lexsort((mean_c, -mean_q))[0]]
    # Oracle: top true score per prompt, cheapest among the tied (lexsort keys: last is primary).
    q = np.where(np.isnan(true_q), -np.inf, true_q)
    top = q.max(axis=1, keepdims=True)
    idx = np.argmin(np.where(q >= top, true_c, np.inf), axis=1)
    rows = np.arange(true_q.shape[0])

    def single(j: int) -> Reference:
        return Reference(float(np.nanmean(true_c[:, j])), float(np.nanmean(true_q[:, j])), models[j])

    return {
        "cheapest": single(int(cheap)),
        "best_single": single(int(best)),
        "oracle": Reference(float(true_c[rows, idx].mean()), float(true_q[rows, idx].mean())),
    }


def upper_envelope(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the non-decreasing concave hull of (cost, quality) points, sorted by cost."""
    best_at: dict[float, float] = {}
    for x, y in zip(np.asarray(cost, float).tolist(), np.asarray(quality, float).tolist(), strict=True):
        best_at[x] = max(y, best_at.get(x, -np.inf))
    pts = sorted(best_at.items())
    hull: list[tuple[float, float]] = []
    for p in pts:  # Andrew's monotone chain, upper half
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    xs, ys = np.array([h[0] for h in hull]), np.array([h[1] for h in hull])
    peak = int(np.argmax(ys))  # past the peak, spending more never has to lower quality
    return xs[: peak + 1], ys[: peak + 1]


def envelope_at(xs: np.ndarray, ys: np.ndarray, c: float) -> float:
    """Envelope value at cost c: 0 below its first vertex, flat after its last."""
    if c < xs[0]:
        return 0.0
    return float(np.interp(c, xs, ys))


def auc(cost: np.ndarray, quality: np.ndarray, lo: float, hi: float, q_ref: float) -> float:
    """Normalized area under the upper envelope over [lo, hi] (see module docstring)."""
    xs, ys = upper_envelope(cost, quality)
    if hi - lo <= 1e-12 * max(abs(hi), 1e-30):
        return envelope_at(xs, ys, hi) / q_ref
    inner = xs[(xs > lo) & (xs < hi)]
    grid = np.unique(np.concatenate([[lo, hi], inner, np.nextafter(inner, -np.inf)]))
    vals = np.array([envelope_at(xs, ys, float(g)) for g in grid])
    area = float(np.sum((vals[1:] + vals[:-1]) / 2 * np.diff(grid)))
    return area / (q_ref * (hi - lo))


def _pgr_metrics(curve: Curve, refs: dict[str, Reference], models: tuple[str, ...]) -> dict[str, float]:
    """RouteLLM's APGR and CPT(50%), CPT(80%) for two-model data (strong = best single)."""
    strong = models.index(refs["best_single"].model or "")
    q_weak, q_strong = refs["cheapest"].quality, refs["best_single"].quality
    gap = q_strong - q_weak
    if gap <= 0:
        return {"apgr": float("nan"), "cpt50": float("nan"), "cpt80": float("nan")}
    frac = np.concatenate([[0.0, 1.0], curve.share[:, strong]])
    pgr = np.concatenate([[0.0, 1.0], (curve.quality - q_weak) / gap])
    xs, ys = upper_envelope(frac, pgr)
    grid = np.linspace(0.0, 1.0, 1001)
    apgr = float(np.trapezoid([envelope_at(xs, ys, float(g)) for g in grid], grid))

    def cpt(target: float) -> float:
        ok = pgr >= target - 1e-12
        return float(frac[ok].min())

    return {"apgr": apgr, "cpt50": cpt(0.5), "cpt80": cpt(0.8)}


def curve_metrics(curve: Curve, refs: dict[str, Reference]) -> dict[str, float]:
    """peak_quality, quality_at_best_cost, cost_at_95 and auc of one router curve."""
    best, cheap = refs["best_single"], refs["cheapest"]
    xs, ys = upper_envelope(curve.cost, curve.quality)
    reach = curve.cost[curve.quality >= 0.95 * best.quality - 1e-12]
    out = {
        "peak_quality": float(curve.quality.max()),
        "quality_at_best_cost": envelope_at(xs, ys, best.cost),
        "cost_at_95": float(reach.min() / best.cost) if reach.size else float("inf"),
        "auc": auc(curve.cost, curve.quality, min(cheap.cost, best.cost), best.cost, best.quality),
    }
    if len(curve.models) == 2:
        out.update(_pgr_metrics(curve, refs, curve.models))
    return out


def random_mixing(refs: dict[str, Reference]) -> dict[str, Any]:
    """The line of randomly sending a share of prompts to the best single model, the rest to the cheapest."""
    cheap, best = refs["cheapest"], refs["best_single"]
    cost = np.array([cheap.cost, best.cost])
    quality = np.array([cheap.quality, best.quality])
    lo, hi = min(cheap.cost, best.cost), best.cost
    return {
        "curve": [[float(c), float(q)] for c, q in zip(cost, quality, strict=True)],
        "auc": auc(cost, quality, lo, hi, best.quality),
    }


def reference_report(refs: dict[str, Reference]) -> dict[str, Any]:
    """report.json's ``reference`` block: the fixed points plus the random-mixing line."""
    out: dict[str, Any] = {k: v.to_json() for k, v in refs.items()}
    out["random"] = random_mixing(refs)
    return out


def evaluate_router(
    pred_q: np.ndarray,
    pred_c: np.ndarray,
    true_q: np.ndarray,
    true_c: np.ndarray,
    models: tuple[str, ...],
    refs: dict[str, Reference] | None = None,
) -> dict[str, Any]:
    """Sweep λ and return the metrics plus the curve, in report.json's per-router layout."""
    refs = refs or reference_points(true_q, true_c, models)
    curve = sweep(pred_q, pred_c, true_q, true_c, models=models)
    metrics = curve_metrics(curve, refs)
    return {
        **metrics,
        "curve": curve.points(),
        "lambdas": curve.lambdas.tolist(),
        "share": {m: curve.share[:, j].tolist() for j, m in enumerate(models)},
    }


def paired_bootstrap(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    pred_c: np.ndarray,
    true_q: np.ndarray,
    true_c: np.ndarray,
    models: tuple[str, ...],
    n_boot: int = 200,
    seed: int = 0,
    pred_c_b: np.ndarray | None = None,
) -> dict[str, float]:
    """AUC of router a minus router b, with a 95% percentile interval over prompts resampled with replacement
    (:func:`scipy.stats.bootstrap` over the prompt indices; non-finite draws are dropped).

    Both routers are scored on the same resampled prompts (reference points recomputed on each), so the
    interval is for the difference, not two overlapping intervals. pred_a, pred_b, true_q, true_c: [n, m];
    pred_c: [m] or [n, m], the predicted cost both routers decide with, unless ``pred_c_b`` gives router b its
    own (two trained routers, each with its cost model). Returns ``{"delta", "lo", "hi", "share_a_ge_b",
    "n_boot"}``.
    """
    pred_c = _as_matrix(pred_c, true_q.shape)
    cost_b = pred_c if pred_c_b is None else _as_matrix(pred_c_b, true_q.shape)

    def delta(rows: np.ndarray) -> float:
        q, c = true_q[rows], true_c[rows]
        refs = reference_points(q, c, models)
        a, b = (
            curve_metrics(sweep(p[rows], pc[rows], q, c, models=models), refs)
            for p, pc in ((pred_a, pred_c), (pred_b, cost_b))
        )
        return float(a["auc"] - b["auc"])

    from scipy.stats import bootstrap

    n = true_q.shape[0]
    res = bootstrap(
        (np.arange(n),),
        lambda rows: delta(np.asarray(rows, dtype=np.int64)),
        n_resamples=n_boot,
        vectorized=False,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    draws = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
    return {
        "delta": delta(np.arange(n)),
        "lo": float(lo),
        "hi": float(hi),
        "share_a_ge_b": float((draws >= 0).mean()) if len(draws) else float("nan"),
        "n_boot": len(draws),
    }

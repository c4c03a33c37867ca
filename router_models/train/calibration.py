"""Tuning on validation rows after a scorer is chosen: per-model calibration, and λ presets.

In:  a scorer's predicted quality on the validation rows ``[n_val, m]`` (from a fit that never saw them),
     the observed scores ``[n_val, m]`` (NaN = no result), and predicted / true costs.
Out: a :class:`Calibrator` (per model a monotone map, stored as plain arrays) so that "predicted quality 0.8"
     means about 80% of such prompts are answered well; :func:`ece` / :func:`reliability` to check it; and
     presets, named λ values that hit a target on validation (:func:`fit_presets`).

Calibration is centred isotonic regression (Oron & Flournoy 2017): the pool-adjacent-violators fit of
sklearn's ``IsotonicRegression`` is reduced to one point per block (the block's mean prediction, its fitted
value) and interpolated linearly, clipped outside. Plain isotonic regression is a step function that would
turn distinct predictions into exact ties (and ties go to the cheaper model); the centred version is strictly
increasing between its knots, so a model's ranking of prompts is kept. ``platt`` (a logistic fit on the
prediction's logit) is the two-parameter alternative for small validation sets. A model with fewer than
``min_count`` validation results keeps the identity map.

Presets (targets relative to the best single model on the validation rows, as in
:func:`router_models.evaluate.metrics.reference_points`):

- ``quality_share`` x: the cheapest λ whose realized quality is ≥ x · best single quality;
- ``cost_share`` x: the best quality whose realized mean cost is ≤ x · best single cost;
- ``model_share`` x of model M: the best quality sending ≤ x of calls to M;
- ``lambda`` x: a fixed λ.

The λ is taken from the middle of the run of sweep λs that give the same realized point, so a small shift in
predictions at serving time does not fall off an edge. An unreachable target falls back to the closest point
and says so (``"met": false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from router_models.evaluate.metrics import reference_points, sweep

__all__ = [
    "DEFAULT_PRESETS",
    "Calibrator",
    "Method",
    "PresetTarget",
    "ece",
    "fit_presets",
    "reliability",
]

Method = Literal["isotonic", "platt", "identity"]
AUTO_METHODS: tuple[Method, ...] = ("identity", "platt", "isotonic")


@dataclass
class Calibrator:
    """Per-model monotone maps. ``knots_x[j]`` / ``knots_y[j]``: interpolation table of model j (isotonic);
    ``platt[j]`` = (a, b) for sigmoid(a·logit(p) + b); ``methods[j]`` says which applies."""

    methods: list[str] = field(default_factory=list)
    knots_x: list[np.ndarray] = field(default_factory=list)
    knots_y: list[np.ndarray] = field(default_factory=list)
    platt: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def identity(cls, m: int) -> Calibrator:
        return cls(["identity"] * m, [np.zeros(0)] * m, [np.zeros(0)] * m, [(1.0, 0.0)] * m)

    @classmethod
    def fit(cls, pred: np.ndarray, scores: np.ndarray, method: Method = "isotonic", min_count: int = 20) -> Calibrator:
        """Fit model j's map on its observed validation entries; pred, scores: [n_val, m]."""
        out = cls.identity(pred.shape[1])
        for j in range(pred.shape[1]):
            rows = ~np.isnan(scores[:, j])
            p, s = pred[rows, j], scores[rows, j]
            if method == "identity" or rows.sum() < min_count or np.ptp(p) <= 0:
                continue
            if method == "isotonic":
                out.knots_x[j], out.knots_y[j] = _centred_isotonic(p, s)
            else:
                out.platt[j] = _platt(p, s)
            out.methods[j] = method
        return out

    @classmethod
    def choose(
        cls,
        pred: np.ndarray,
        scores: np.ndarray,
        costs: np.ndarray,
        pred_cost: np.ndarray,
        models: tuple[str, ...],
        methods: tuple[Method, ...] = AUTO_METHODS,
        seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> tuple[Method, dict[str, float]]:
        """The method whose calibrated predictions route best, by cross-fitted validation AUC.

        Per-model monotone maps keep each model's own ranking but can reorder models against each other, which
        is what routing compares; so each method is fitted on one half of the validation rows and scored on the
        other (both ways), and the best mean AUC wins (ties go to the earlier, simpler method). With ``groups``
        ([n] labels, e.g. task families) each group is scored by a map fitted on the other groups instead, and a
        map must route at least as well as identity on **every** group it never saw, or identity wins: a mean
        edge of 0.001 over three tasks can hide a 0.1 loss on the next one (held-out math-l5: Platt won the
        mean by 0.0014 and lost 0.095 AUC on the new task).
        pred, scores, costs, pred_cost: [n_val, m].
        """
        from router_models.evaluate.metrics import curve_metrics, reference_points, sweep

        if groups is None:
            half = np.random.default_rng(seed).permutation(len(pred)) < len(pred) // 2
            splits = [half, ~half]
        else:
            splits = [np.asarray(groups) != g for g in np.unique(groups)]
        ok = ~np.isnan(scores).all(axis=1)
        table: dict[str, float] = {}
        per_split: dict[str, np.ndarray] = {}
        for method in methods:
            aucs = []
            for fit_rows in splits:
                test_rows = ~fit_rows & ok
                cal = cls.fit(pred[fit_rows], scores[fit_rows], method)
                q, s, c = cal.apply(pred[test_rows]), scores[test_rows], costs[test_rows]
                refs = reference_points(s, c, models)
                curve = sweep(q, pred_cost[test_rows], s, c, models=models)
                aucs.append(curve_metrics(curve, refs)["auc"])
            per_split[method], table[method] = np.round(aucs, 6), float(np.mean(aucs))
        allowed = list(methods)
        if groups is not None and "identity" in methods:
            base = per_split["identity"]
            allowed = [m for m in methods if m == "identity" or bool((per_split[m] >= base).all())]
        best = max(allowed, key=lambda m: (round(table[m], 6), -methods.index(m)))
        return best, table

    def add_identity(self) -> None:
        """Append an identity map (a model onboarded without validation data)."""
        self.methods.append("identity")
        self.knots_x.append(np.zeros(0))
        self.knots_y.append(np.zeros(0))
        self.platt.append((1.0, 0.0))

    def apply(self, pred: np.ndarray) -> np.ndarray:
        """Calibrated quality [n, m] in [0, 1]."""
        pred = np.asarray(pred, dtype=np.float64)
        out = pred.copy()
        for j, method in enumerate(self.methods):
            if method == "isotonic":
                out[:, j] = np.interp(pred[:, j], self.knots_x[j], self.knots_y[j])
            elif method == "platt":
                a, b = self.platt[j]
                out[:, j] = 1.0 / (1.0 + np.exp(-(a * _logit(pred[:, j]) + b)))
        return np.clip(out, 0.0, 1.0)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON params, arrays): ragged knot tables are concatenated with offsets [m + 1]."""
        sizes = [len(x) for x in self.knots_x]
        arrays = {
            "knots_x": np.concatenate([np.zeros(0), *self.knots_x]).astype(np.float64),
            "knots_y": np.concatenate([np.zeros(0), *self.knots_y]).astype(np.float64),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "platt": np.array(self.platt, dtype=np.float64).reshape(-1, 2),
        }
        return {"methods": list(self.methods)}, arrays

    @classmethod
    def from_arrays(cls, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Calibrator:
        off = arrays["offsets"]
        xs = [arrays["knots_x"][off[j] : off[j + 1]] for j in range(len(off) - 1)]
        ys = [arrays["knots_y"][off[j] : off[j + 1]] for j in range(len(off) - 1)]
        platt = [(float(a), float(b)) for a, b in arrays["platt"]]
        return cls(list(params["methods"]), xs, ys, platt)


def _centred_isotonic(p: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the centred isotonic fit: one (mean prediction, fitted value) per PAV block."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, s).predict(p)
    levels, block = np.unique(fitted, return_inverse=True)
    centres = np.bincount(block, weights=p) / np.bincount(block)
    return centres, levels


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _platt(p: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Platt scaling on the prediction's logit; fractional scores are fitted as sample weights."""
    from sklearn.linear_model import LogisticRegression

    z = _logit(p)[:, None]
    X, y, w = np.vstack([z, z]), np.r_[np.ones(len(s)), np.zeros(len(s))], np.r_[s, 1 - s]
    keep = w > 0
    if len(np.unique(y[keep])) < 2:
        return 1.0, 0.0
    lr = LogisticRegression(C=1e4).fit(X[keep], y[keep], sample_weight=w[keep])
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def reliability(pred: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over the observed entries: [{"lo", "hi", "count", "predicted", "observed"}]."""
    mask = ~np.isnan(scores)
    p, s = np.asarray(pred, dtype=np.float64)[mask], np.asarray(scores, dtype=np.float64)[mask]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            bins.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "count": int(sel.sum()),
                    "predicted": float(p[sel].mean()),
                    "observed": float(s[sel].mean()),
                }
            )
    return bins


def ece(pred: np.ndarray, scores: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |predicted − observed| over reliability bins."""
    bins = reliability(pred, scores, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in bins) / max(total, 1))


# ----------------------------------------------------------------------------------------------- presets

TargetKind = Literal["quality_share", "cost_share", "model_share", "lambda"]


@dataclass(frozen=True)
class PresetTarget:
    """What a preset must achieve on validation (see module docstring)."""

    kind: TargetKind
    value: float
    model: str | None = None  # model_share only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "value": self.value}
        return out | ({"model": self.model} if self.model is not None else {})


DEFAULT_PRESETS: dict[str, PresetTarget] = {
    "quality": PresetTarget("lambda", 0.0),
    "balanced": PresetTarget("quality_share", 0.95),
    "cheap": PresetTarget("cost_share", 0.30),
}


def fit_presets(
    pred_q: np.ndarray,
    pred_c: np.ndarray,
    true_q: np.ndarray,
    true_c: np.ndarray,
    models: tuple[str, ...],
    targets: Mapping[str, PresetTarget] = DEFAULT_PRESETS,
    default: str = "balanced",
) -> dict[str, dict[str, Any]]:
    """λ per preset from a sweep on validation rows; adds ``"default"`` = a copy of ``targets[default]``.

    pred_q, true_q, true_c: [n_val, m]; pred_c: [m] or [n_val, m]. Returns
    ``{name: {"lambda", "target", "met", "val_cost", "val_quality", "val_share"}}``.
    """
    if default not in targets:
        raise ValueError(f"default preset {default!r} is not among the targets {sorted(targets)}")
    refs = reference_points(true_q, true_c, models)
    curve = sweep(pred_q, pred_c, true_q, true_c, models=models)
    best_q, best_c = refs["best_single"].quality, refs["best_single"].cost
    out: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        if target.kind == "lambda":
            point = sweep(pred_q, pred_c, true_q, true_c, lambdas=np.array([target.value]), models=models)
            lam, q, c, share, met = target.value, point.quality[0], point.cost[0], point.share[0], True
        else:
            i, met = _pick(curve.cost, curve.quality, _share_of(curve.share, models, target), target, best_q, best_c)
            lam = _stable_lambda(curve.lambdas, curve.cost, curve.quality, i)
            q, c, share = curve.quality[i], curve.cost[i], curve.share[i]
        out[name] = {
            "lambda": float(lam),
            "target": target.to_json(),
            "met": bool(met),
            "val_cost": float(c),
            "val_quality": float(q),
            "val_share": {m: float(v) for m, v in zip(models, share, strict=True)},
        }
    out["default"] = dict(out[default]) | {"preset": default}
    return out


def _share_of(share: np.ndarray, models: tuple[str, ...], target: PresetTarget) -> np.ndarray | None:
    if target.kind != "model_share":
        return None
    if target.model not in models:
        raise ValueError(f"preset target model {target.model!r} is not among {list(models)}")
    return share[:, models.index(target.model)]


def _pick(
    cost: np.ndarray, quality: np.ndarray, share: np.ndarray | None, t: PresetTarget, best_q: float, best_c: float
) -> tuple[int, bool]:
    """Index of the sweep point that meets the target best, and whether the target was met."""
    tol = 1e-12
    if t.kind == "quality_share":
        ok = quality >= t.value * best_q - tol
        if not ok.any():
            return int(np.lexsort((cost, -quality))[0]), False
        return int(np.flatnonzero(ok)[np.lexsort((-quality[ok], cost[ok]))[0]]), True
    bound = cost if t.kind == "cost_share" else share
    limit = t.value * best_c if t.kind == "cost_share" else t.value
    assert bound is not None
    ok = bound <= limit + tol
    if not ok.any():
        return int(np.lexsort((-quality, bound))[0]), False
    return int(np.flatnonzero(ok)[np.lexsort((cost[ok], -quality[ok]))[0]]), True


def _stable_lambda(lambdas: np.ndarray, cost: np.ndarray, quality: np.ndarray, i: int) -> float:
    """Middle λ of the contiguous run of sweep points realizing the same (cost, quality) as point i."""
    same = (cost == cost[i]) & (quality == quality[i])
    lo, hi = i, i
    while lo > 0 and same[lo - 1]:
        lo -= 1
    while hi < len(same) - 1 and same[hi + 1]:
        hi += 1
    return float(lambdas[(lo + hi) // 2])

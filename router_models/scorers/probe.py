"""``probe``: per-model L2 logistic regression on standardized features.

In:  feature rows ``[n, d]`` (numpy or scipy sparse: never densified as a whole), scores ``[n, m]``.
Out: quality ``[q, m]``; ``coef`` ``[m, d]``, ``intercept`` ``[m]`` and ``link`` ``[m]`` are the fitted model.

Ridge regression, clipped to [0, 1], for a model whose scores are not all 0/1; regularization chosen per model.
Optionally each model keeps only its top-k features ranked by class-mean difference on the fit rows (the
sparse-probing recipe of Gurnee et al. 2023, "Finding Neurons in a Haystack", §3), k chosen on val. The
``dense`` preset is the same probe on the dense pooled hidden state.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from router_models.scorers.base import Arrays
from router_models.scorers.registry import Preset, ScorerKind, Shapes, width

__all__ = ["KIND", "ProbeScorer"]


def _as_matrix(X: Any) -> Any:
    """float64 CSR for sparse input, float64 ndarray otherwise."""
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float64)
    return np.asarray(X, dtype=np.float64)


class _Standardized:
    """A feature matrix with per-feature mean/scale; hands out standardized dense blocks without ever
    densifying the whole (possibly sparse, 9216-wide) matrix unless all columns are asked for."""

    def __init__(self, X: Any, mean: np.ndarray, scale: np.ndarray) -> None:
        self.X, self.mean, self.scale = _as_matrix(X), mean, scale
        self._full: np.ndarray | None = None

    @staticmethod
    def moments(X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std (std 1 where a feature is constant)."""
        X = _as_matrix(X)
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = X.multiply(X) if sp.issparse(X) else X * X
        std = np.sqrt(np.maximum(np.asarray(sq.mean(axis=0)).ravel() - mean**2, 0.0))
        return mean, np.where(std > 1e-8, std, 1.0)

    def block(self, rows: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        """Standardized ``[rows, cols]`` as a dense float64 array (``cols=None``: every feature)."""
        if cols is None:
            if self._full is None:
                dense = self.X.toarray() if sp.issparse(self.X) else self.X
                self._full = (dense - self.mean) / self.scale
            return self._full[rows]
        sub = self.X[rows][:, cols]
        sub = sub.toarray() if sp.issparse(sub) else sub
        return (sub - self.mean[cols]) / self.scale[cols]

    def top_features(self, rows: np.ndarray, y: np.ndarray, k: int | None) -> np.ndarray | None:
        """Indices of the k features with the largest |class-mean difference| in standardized units.

        Σ_i x_i (y_i − ȳ) = n₁n₀/n · (mean(x|y=1) − mean(x|y=0)) for 0/1 targets, so ranking by
        |Xᵀ(y − ȳ)| / scale is the class-mean-difference ranking (and a covariance ranking for fractional
        scores). Standardized units let the max- and mean-pooled blocks compete on equal footing.
        """
        if k is None or k >= self.X.shape[1]:
            return None
        yc = y - y.mean()
        score = np.abs(np.asarray(self.X[rows].T @ yc).ravel()) / self.scale
        return np.sort(np.argsort(-score, kind="stable")[:k])


@dataclass
class ProbeScorer:
    """Per-model logistic (ridge for fractional scores) probe on standardized features.

    ``coef`` [m, d], ``intercept`` [m] and ``link`` [m] ("logistic" | "ridge") hold the fitted model, so it can
    be saved as plain arrays. With ``top_k`` other than ``(None,)`` each model keeps only its top-k features
    (zeros elsewhere in ``coef``), k chosen per model on val jointly with C.
    """

    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    top_k: tuple[int | None, ...] = (None,)  # grid; None = every feature
    name: str = "probe"
    max_iter: int = 3000
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    link: list[str] = field(default_factory=list)
    chosen_C: list[float] = field(default_factory=list)
    chosen_k: list[int | None] = field(default_factory=list)

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> ProbeScorer:
        self.mean_, self.scale_ = _Standardized.moments(X)
        data = _Standardized(X, self.mean_, self.scale_)
        m = scores.shape[1]
        self.coef, self.intercept = np.zeros((m, data.X.shape[1])), np.zeros(m)
        self.link, self.chosen_C, self.chosen_k = [], [], []
        for j in range(m):
            w, b, link, C, k = self._fit_model(data, np.asarray(scores[:, j], dtype=np.float64), val)
            self.coef[j], self.intercept[j] = w, b
            self.link.append(link)
            self.chosen_C.append(C)
            self.chosen_k.append(k)
        return self

    def add_model(self, X: Any, s: np.ndarray, val: np.ndarray | None = None) -> int:
        """Fit one more model's probe on its own labelled prompts, keeping the standardization; its index."""
        assert self.coef is not None and self.mean_ is not None and self.scale_ is not None, "fit first"
        data = _Standardized(X, self.mean_, self.scale_)
        w, b, link, C, k = self._fit_model(data, np.asarray(s, dtype=np.float64), val)
        self._append(w, b, link, C, k)
        return len(self.link) - 1

    def add_constant(self, level: float) -> int:
        """Add a model predicted at a constant quality ``level`` (too little data for a probe); its index."""
        assert self.coef is not None, "fit first"
        link = "logistic" if 0 < level < 1 else "ridge"
        bias = float(np.log(level / (1 - level))) if link == "logistic" else float(level)
        self._append(np.zeros(self.coef.shape[1]), bias, link, float("nan"), 0)
        return len(self.link) - 1

    def _append(self, w: np.ndarray, b: float, link: str, C: float, k: int | None) -> None:
        assert self.coef is not None and self.intercept is not None
        self.coef, self.intercept = np.vstack([self.coef, w]), np.append(self.intercept, b)
        self.link.append(link)
        self.chosen_C.append(C)
        self.chosen_k.append(k)

    def _fit_model(
        self, data: _Standardized, s: np.ndarray, val: np.ndarray | None
    ) -> tuple[np.ndarray, float, str, float, int | None]:
        """Weights [d], bias, link, C and k of one model's probe (hyperparameters on val, refit on all rows)."""
        rows = ~np.isnan(s)
        w_full = np.zeros(data.X.shape[1])
        if not rows.any():
            return w_full, 0.0, "logistic", float("nan"), None
        y = s[rows]
        link = "logistic" if np.isin(y, (0.0, 1.0)).all() else "ridge"
        k, C = self._choose(data, s, link, val)
        cols = data.top_features(rows, y, k)
        w, b = _fit_one(data.block(rows, cols), y, link, C, self.max_iter)
        w_full[slice(None) if cols is None else cols] = w
        return w_full, b, link, C, k

    def _choose(
        self, data: _Standardized, s: np.ndarray, link: str, val: np.ndarray | None
    ) -> tuple[int | None, float]:
        default = (self.top_k[len(self.top_k) // 2], self.Cs[len(self.Cs) // 2])
        if val is None or len(self.Cs) * len(self.top_k) == 1:
            return default
        fit_rows, val_rows = ~np.isnan(s) & ~val, ~np.isnan(s) & val
        if fit_rows.sum() < 2 or val_rows.sum() < 1:
            return default
        best, best_loss = default, np.inf
        for k in self.top_k:
            # Features are ranked on the fit rows only, so the val loss is honest about the selection too.
            cols = data.top_features(fit_rows, s[fit_rows], k)
            xf, xv = data.block(fit_rows, cols), data.block(val_rows, cols)
            for C in self.Cs:
                w, b = _fit_one(xf, s[fit_rows], link, C, self.max_iter)
                loss = float(np.mean((_apply_link(xv @ w + b, link) - s[val_rows]) ** 2))
                if loss < best_loss - 1e-12:
                    best, best_loss = (k, C), loss
        return best

    def logits(self, X: Any) -> np.ndarray:
        """Linear scores before the link ([n, m]); explanations decompose these.

        Computed as X·(w/scale) − mean·(w/scale) + b, so a sparse X is never densified.
        """
        assert self.coef is not None and self.intercept is not None and self.mean_ is not None, "fit first"
        w = self.coef / self.scale_
        return np.asarray(_as_matrix(X) @ w.T) - self.mean_ @ w.T + self.intercept

    def predict_quality(self, X: Any) -> np.ndarray:
        z = self.logits(X)
        return np.stack([_apply_link(z[:, j], lk) for j, lk in enumerate(self.link)], axis=1)


def _apply_link(z: np.ndarray, link: str) -> np.ndarray:
    if link == "logistic":
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
    return np.clip(z, 0.0, 1.0)


def _fit_one(xs: np.ndarray, y: np.ndarray, link: str, C: float, max_iter: int) -> tuple[np.ndarray, float]:
    """Weights and bias of one model's probe. Constant targets give a constant predictor."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge

    if np.all(y == y[0]):
        level = float(y[0])
        bias = 50.0 if level >= 1 else -50.0 if level <= 0 else np.log(level / (1 - level))
        return np.zeros(xs.shape[1]), bias if link == "logistic" else level
    with warnings.catch_warnings():
        # lbfgs may stop a hair short of its tolerance on near-separable tasks; the fit is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if link == "logistic":
            lr = LogisticRegression(C=C, max_iter=max_iter).fit(xs, y.astype(int))
            return lr.coef_[0], float(lr.intercept_[0])
    ridge = Ridge(alpha=1.0 / C).fit(xs, y)
    return ridge.coef_, float(ridge.intercept_)


def to_state(scorer: ProbeScorer) -> tuple[dict[str, Any], Arrays]:
    assert scorer.coef is not None and scorer.intercept is not None
    assert scorer.mean_ is not None and scorer.scale_ is not None
    params = {
        "name": scorer.name,
        "Cs": list(scorer.Cs),
        "top_k": list(scorer.top_k),
        "max_iter": scorer.max_iter,
        "link": list(scorer.link),
        "chosen_C": [None if np.isnan(c) else c for c in scorer.chosen_C],
        "chosen_k": list(scorer.chosen_k),
    }
    return params, {"coef": scorer.coef, "intercept": scorer.intercept, "mean": scorer.mean_, "scale": scorer.scale_}


def from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ProbeScorer:
    return ProbeScorer(
        Cs=tuple(params["Cs"]),
        top_k=tuple(params["top_k"]),
        name=params["name"],
        max_iter=int(params["max_iter"]),
        mean_=arrays["mean"],
        scale_=arrays["scale"],
        coef=arrays["coef"],
        intercept=arrays["intercept"],
        link=list(params["link"]),
        chosen_C=[float("nan") if c is None else float(c) for c in params["chosen_C"]],
        chosen_k=list(params["chosen_k"]),
    )


def shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    fw = width(d)
    return {
        "coef": ((m, d), f"{m} models × {fw}"),
        "intercept": ((m,), f"{m} models"),
        "mean": ((d,), fw),
        "scale": ((d,), fw),
    }


KIND = ScorerKind(
    name="probe",
    cls=ProbeScorer,
    features=("sae", "dense"),
    to_state=to_state,
    from_state=from_state,
    shapes=shapes,
    presets=(
        Preset(
            "probe",
            "sae",
            {"top_k": (16, 64, 256, 1024)},
            roles=("candidate",),
            description="top-k sparse probe on pooled SAE latents",
        ),
        Preset(
            "dense",
            "dense",
            {"name": "dense"},
            description="per-model logistic/ridge probe on the dense pooled hidden state",
            label="dense probe",
        ),
        Preset(
            "sae_probe", "sae", roles=("harness",), description="per-model logistic/ridge probe on pooled SAE latents"
        ),
        Preset(
            "sae_probe_topk",
            "sae",
            {"top_k": (64, 256, None)},
            roles=("baseline",),
            description="sparse probe, k in 64, 256, all",
            label="sae probe",
        ),
    ),
)

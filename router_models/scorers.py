"""Scorers: prompt features in, predicted quality of every model out.

In:  a feature matrix ``[n, d]`` (dense pooled hidden states, pooled SAE latents, or task labels for the task
     oracle) and the score matrix ``[n, m]`` of the training prompts (NaN where a model has no result).
Out: predicted quality ``[n, m]`` in [0, 1] for new prompts.

Every scorer follows one small protocol (:class:`Scorer`): ``fit(X, scores, val)`` then
``predict_quality(X)``. ``val`` is a boolean mask over the training rows: hyperparameters are chosen on those
rows (never on test), then the scorer is refit on all rows. Missing scores are simply not training targets
for that model. Selection criterion everywhere is the validation Brier score (mean squared error between the
predicted quality and the observed score), a proper scoring rule that works for binary and fractional scores
alike and is far less noisy on a few hundred prompts than a routing curve.

- ``knn``: cosine k-nearest neighbours; a model's quality is its mean score over the neighbours that have one.
- ``probe``: per-model L2 logistic regression on standardized features (ridge regression, clipped to [0, 1],
  for a model whose scores are not all 0/1), regularization chosen per model.
- ``task_oracle``: per-task mean score from train. It reads the task label, which a router never has: it is a
  reference, not a deployable router.

The cost side is :func:`mean_cost`: each model's mean training cost, so a router never sees the true cost of
the prompt it routes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["KNNScorer", "ProbeScorer", "Scorer", "TaskOracle", "brier", "mean_cost"]


class Scorer(Protocol):
    """Fit on training prompts, predict every model's quality on new ones."""

    name: str

    def fit(self, X: np.ndarray, scores: np.ndarray, val: np.ndarray | None = None) -> Scorer: ...

    def predict_quality(self, X: np.ndarray) -> np.ndarray: ...


def column_means(scores: np.ndarray) -> np.ndarray:
    """Per-model mean over observed scores ([m]); 0.5 for a model with none."""
    counts = (~np.isnan(scores)).sum(axis=0)
    sums = np.nansum(scores, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)


def brier(pred: np.ndarray, scores: np.ndarray) -> float:
    """Mean squared error over observed entries."""
    mask = ~np.isnan(scores)
    return float(np.mean((pred[mask] - scores[mask]) ** 2))


def mean_cost(scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Each model's mean training cost over the prompts it has a result on ([m])."""
    observed = ~np.isnan(scores) & ~np.isnan(costs)
    return np.where(observed, costs, 0.0).sum(axis=0) / np.maximum(observed.sum(axis=0), 1)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def knn_predict(train_x: np.ndarray, train_s: np.ndarray, query_x: np.ndarray, k: int) -> np.ndarray:
    """Mean neighbour score per model ([q, m]); rows of train_x/query_x must be unit-norm."""
    fallback = column_means(train_s)
    k = min(k, train_x.shape[0])
    out = np.empty((query_x.shape[0], train_s.shape[1]))
    observed = ~np.isnan(train_s)
    filled = np.where(observed, train_s, 0.0)
    for start in range(0, query_x.shape[0], 512):
        sims = query_x[start : start + 512] @ train_x.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sums = filled[idx].sum(axis=1)
        counts = observed[idx].sum(axis=1)
        out[start : start + 512] = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    return out


@dataclass
class KNNScorer:
    """Cosine kNN; k chosen on the validation rows (one k for all models)."""

    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    k: int | None = None
    name: str = "knn"
    val_brier: dict[int, float] = field(default_factory=dict)
    _x: np.ndarray | None = None
    _s: np.ndarray | None = None

    def fit(self, X: np.ndarray, scores: np.ndarray, val: np.ndarray | None = None) -> KNNScorer:
        xn = _unit_rows(X)
        if val is not None and val.any() and (~val).any():
            for k in self.ks:
                pred = knn_predict(xn[~val], scores[~val], xn[val], k)
                self.val_brier[k] = brier(pred, scores[val])
            self.k = min(self.val_brier, key=lambda k: (self.val_brier[k], k))
        self.k = self.k or 20
        self._x, self._s = xn, np.asarray(scores, dtype=np.float64)
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        assert self._x is not None and self._s is not None and self.k is not None, "fit first"
        return knn_predict(self._x, self._s, _unit_rows(X), self.k)


@dataclass
class ProbeScorer:
    """Per-model logistic (ridge for fractional scores) probe on standardized features.

    ``coef`` [m, d], ``intercept`` [m] and ``link`` [m] ("logistic" | "ridge") hold the fitted model, so it can
    be saved as plain arrays.
    """

    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    name: str = "probe"
    max_iter: int = 3000
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    link: list[str] = field(default_factory=list)
    chosen_C: list[float] = field(default_factory=list)

    def fit(self, X: np.ndarray, scores: np.ndarray, val: np.ndarray | None = None) -> ProbeScorer:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.where(X.std(axis=0) > 1e-8, X.std(axis=0), 1.0)
        xs = (X - self.mean_) / self.scale_
        m = scores.shape[1]
        self.coef, self.intercept = np.zeros((m, X.shape[1])), np.zeros(m)
        self.link, self.chosen_C = [], []
        for j in range(m):
            rows = ~np.isnan(scores[:, j])
            y = scores[rows, j]
            link = "logistic" if np.isin(y, (0.0, 1.0)).all() else "ridge"
            C = self._choose_C(xs, scores[:, j], link, val)
            self.coef[j], self.intercept[j] = _fit_one(xs[rows], y, link, C, self.max_iter)
            self.link.append(link)
            self.chosen_C.append(C)
        return self

    def _choose_C(self, xs: np.ndarray, s: np.ndarray, link: str, val: np.ndarray | None) -> float:
        if val is None or len(self.Cs) == 1:
            return self.Cs[len(self.Cs) // 2]
        fit_rows, val_rows = ~np.isnan(s) & ~val, ~np.isnan(s) & val
        if fit_rows.sum() < 2 or val_rows.sum() < 1:
            return self.Cs[len(self.Cs) // 2]
        losses = []
        for C in self.Cs:
            w, b = _fit_one(xs[fit_rows], s[fit_rows], link, C, self.max_iter)
            pred = _apply_link(xs[val_rows] @ w + b, link)
            losses.append(float(np.mean((pred - s[val_rows]) ** 2)))
        return self.Cs[int(np.argmin(losses))]

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Linear scores before the link ([n, m]); explanations decompose these."""
        assert self.coef is not None and self.intercept is not None, "fit first"
        xs = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return xs @ self.coef.T + self.intercept

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
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


@dataclass
class TaskOracle:
    """Per-task mean score from train (uses the task label: a reference, not a router)."""

    name: str = "task_oracle"
    table: dict[str, np.ndarray] = field(default_factory=dict)
    fallback: np.ndarray | None = None

    def fit(self, X: np.ndarray, scores: np.ndarray, val: np.ndarray | None = None) -> TaskOracle:
        tasks = np.asarray(X)
        self.fallback = column_means(scores)
        for task in np.unique(tasks):
            rows = scores[tasks == task]
            counts = (~np.isnan(rows)).sum(axis=0)
            self.table[str(task)] = np.where(counts > 0, np.nansum(rows, axis=0) / np.maximum(counts, 1), np.nan)
        return self

    def predict_quality(self, X: np.ndarray) -> np.ndarray:
        assert self.fallback is not None, "fit first"
        rows = [self.table.get(str(t), self.fallback) for t in np.asarray(X)]
        out = np.array(rows, dtype=np.float64)
        return np.where(np.isnan(out), self.fallback, out)

"""What every scorer shares: the :class:`Scorer` protocol and the small helpers on score matrices.

In:  a feature matrix ``[n, d]`` (dense pooled hidden states, pooled SAE latents as a numpy array or scipy
     sparse matrix, or task labels for the task oracle; a blend takes a mapping kind → matrix) and the score
     matrix ``[n, m]`` of the training prompts (NaN where a model has no result).
Out: predicted quality ``[n, m]`` in [0, 1] for new prompts.

Every scorer follows one small protocol (:class:`Scorer`): ``fit(X, scores, val)`` then
``predict_quality(X)``. ``val`` is a boolean mask over the training rows: hyperparameters are chosen on those
rows (never on test), then the scorer is refit on all rows. Missing scores are simply not training targets
for that model. Selection criterion inside a scorer is the validation Brier score (mean squared error between
the predicted quality and the observed score), a proper scoring rule that works for binary and fractional
scores alike and is far less noisy on a few hundred prompts than a routing curve (the routing curve picks
*between* scorers, in :mod:`router_models.train.selection`).

The kinds (one module each, listed in :mod:`router_models.scorers.registry`): ``knn``, ``probe``, ``cluster``,
``blend`` and the ``task_oracle`` reference. The cost side is :func:`mean_cost` (each model's mean training
cost) or :mod:`router_models.decide.costs`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

__all__ = ["Arrays", "Scorer", "brier", "column_means", "has_split", "holdout_mask", "mean_cost", "unit_rows"]

Arrays = dict[str, np.ndarray]


class Scorer(Protocol):
    """Fit on training prompts, predict every model's quality on new ones.

    ``X`` is a feature matrix ``[n, d]`` (numpy or scipy sparse), task labels ``[n]`` for the oracle, or a
    mapping kind → matrix for a blend.
    """

    name: str

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> Scorer: ...

    def predict_quality(self, X: Any) -> np.ndarray: ...


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


def holdout_mask(n: int, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """A seeded boolean mask [n] with round(fraction·n) True rows (at least 1, at most n − 1 when n ≥ 2)."""
    n_hold = min(max(round(fraction * n), 1), max(n - 1, 0))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_hold]] = True
    return mask


def has_split(val: np.ndarray | None) -> bool:
    return val is not None and bool(val.any()) and bool((~val).any())


def unit_rows(X: Any) -> Any:
    """Rows scaled to unit L2 norm, float32; a scipy sparse input stays sparse (CSR)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ X)
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

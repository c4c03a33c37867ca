"""Scorers: prompt features in, predicted quality of every model out.

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
*between* scorers, in :mod:`router_models.selection`).

- ``knn``: cosine k-nearest neighbours; a model's quality is its mean score over the neighbours that have one.
- ``probe``: per-model L2 logistic regression on standardized features (ridge regression, clipped to [0, 1],
  for a model whose scores are not all 0/1), regularization chosen per model. Optionally each model keeps only
  its top-k features ranked by class-mean difference on the fit rows (the sparse-probing recipe of Gurnee et
  al. 2023, "Finding Neurons in a Haystack", §3), k chosen on val. ``dense`` is the same probe on the dense
  pooled hidden state.
- ``cluster``: UniRoute (Jitkrittum et al. 2025, arXiv 2502.08773, §4.2): k-means over prompt features; each
  model is its vector of per-cluster mean scores, shrunk toward its global mean; a prompt's quality is the
  soft-assignment-weighted profile. A new model is added from a few hundred labelled prompts without refitting
  anything else (:meth:`ClusterScorer.add_model`).
- ``blend``: weighted average of several scorers (weights chosen by :mod:`router_models.selection`).
- ``task_oracle``: per-task mean score from train. It reads the task label, which a router never has: it is a
  reference, not a deployable router.

The cost side is :func:`mean_cost` (each model's mean training cost) or :mod:`router_models.costs`.
Fitted scorers export plain arrays (:func:`scorer_state` / :func:`scorer_from_state`) so an artifact is
safetensors plus JSON, never pickle.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BlendScorer",
    "ClusterScorer",
    "KNNScorer",
    "ProbeScorer",
    "Scorer",
    "TaskOracle",
    "blend_part_tags",
    "brier",
    "column_means",
    "holdout_mask",
    "mean_cost",
    "scorer_from_state",
    "scorer_state",
    "weighted_sum",
]


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


def _has_split(val: np.ndarray | None) -> bool:
    return val is not None and bool(val.any()) and bool((~val).any())


def _unit_rows(X: Any) -> Any:
    """Rows scaled to unit L2 norm, float32; a scipy sparse input stays sparse (CSR)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ X)
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------------- knn


def knn_predict(train_x: Any, train_s: np.ndarray, query_x: Any, k: int) -> np.ndarray:
    """Mean neighbour score per model ([q, m]); rows of train_x/query_x (dense or sparse) must be unit-norm."""
    fallback = column_means(train_s)
    k = min(k, train_x.shape[0])
    out = np.empty((query_x.shape[0], train_s.shape[1]))
    observed = ~np.isnan(train_s)
    filled = np.where(observed, train_s, 0.0)
    for start in range(0, query_x.shape[0], 512):
        sims = query_x[start : start + 512] @ train_x.T
        sims = sims.toarray() if sp.issparse(sims) else np.asarray(sims)
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sums = filled[idx].sum(axis=1)
        counts = observed[idx].sum(axis=1)
        out[start : start + 512] = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    return out


@dataclass
class KNNScorer:
    """Cosine kNN; k chosen on the validation rows (one k for all models). Sparse features (SAE latents) are
    kept sparse, so the stored training rows cost their non-zeros, not n × d."""

    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    k: int | None = None
    name: str = "knn"
    val_brier: dict[int, float] = field(default_factory=dict)
    _x: Any = None  # unit rows [n, d]: numpy array, or CSR for sparse input
    _s: np.ndarray | None = None

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> KNNScorer:
        xn = _unit_rows(X)
        if val is not None and _has_split(val):
            for k in self.ks:
                pred = knn_predict(xn[~val], scores[~val], xn[val], k)
                self.val_brier[k] = brier(pred, scores[val])
            self.k = min(self.val_brier, key=lambda k: (self.val_brier[k], k))
        self.k = self.k or 20
        self._x, self._s = xn, np.asarray(scores, dtype=np.float64)
        return self

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self._x is not None and self._s is not None and self.k is not None, "fit first"
        return knn_predict(self._x, self._s, _unit_rows(X), self.k)


# ------------------------------------------------------------------------------------------------- probe


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


# ----------------------------------------------------------------------------------------------- cluster


def _sq_dist(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [n, K]."""
    c = centroids.astype(np.float64)
    x = x.astype(np.float64)
    d2 = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def _soft_weights(d2: np.ndarray, tau: float) -> np.ndarray:
    """Cluster weights [n, K]: softmax(−d²/τ), or one-hot on the nearest centroid when τ = 0."""
    if tau <= 0:
        out = np.zeros_like(d2)
        out[np.arange(len(d2)), d2.argmin(axis=1)] = 1.0
        return out
    z = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / tau)
    return z / z.sum(axis=1, keepdims=True)


def _profiles(labels: np.ndarray, scores: np.ndarray, K: int, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster mean scores [K, m] shrunk toward each model's global mean with ``prior`` pseudo-counts,
    and observed counts [K, m]. A cluster where a model has no result gets the model's global mean."""
    observed = ~np.isnan(scores)
    onehot = np.zeros((len(labels), K))
    onehot[np.arange(len(labels)), labels] = 1.0
    counts = onehot.T @ observed
    sums = onehot.T @ np.where(observed, scores, 0.0)
    glob = column_means(scores)
    return (sums + prior * glob) / (counts + prior), counts


def _kmeans(x: np.ndarray, K: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Fewer distinct points than K leaves duplicate centroids: harmless for the profile.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=K, n_init=3, random_state=seed).fit(x).cluster_centers_.astype(np.float64)


@dataclass
class ClusterScorer:
    """UniRoute's cluster-based router: k-means centroids plus each model's per-cluster mean score.

    ``centroids`` [K, d] (over unit-norm feature rows), ``profile`` [K, m], ``counts`` [K, m] observed results per
    cluster, ``tau`` the softmax temperature (0 = hard assignment). K and the temperature (a multiple of the
    mean squared distance of a row to its own centroid) are chosen on val.
    """

    ks: tuple[int, ...] = (8, 16, 32, 64)
    temperatures: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    prior: float = 5.0  # pseudo-counts of shrinkage toward the model's global mean
    seed: int = 0
    name: str = "cluster"
    centroids: np.ndarray | None = None
    profile: np.ndarray | None = None
    counts: np.ndarray | None = None
    tau: float = 0.0
    val_brier: dict[str, float] = field(default_factory=dict)

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> ClusterScorer:
        xn = _unit_rows(X)
        scores = np.asarray(scores, dtype=np.float64)
        K, t = self._choose(xn, scores, val)
        self.centroids = _kmeans(xn, K, self.seed)
        d2 = _sq_dist(xn, self.centroids)
        self.profile, self.counts = _profiles(d2.argmin(axis=1), scores, K, self.prior)
        self.tau = t * float(d2.min(axis=1).mean())
        return self

    def _choose(self, xn: np.ndarray, scores: np.ndarray, val: np.ndarray | None) -> tuple[int, float]:
        n_fit = int((~val).sum()) if val is not None else len(xn)
        ks = [K for K in self.ks if max(n_fit // 3, 1) >= K] or [max(min(self.ks[0], n_fit // 3), 1)]
        if val is None or not _has_split(val) or len(ks) * len(self.temperatures) == 1:
            return ks[len(ks) // 2], self.temperatures[0]
        best, best_loss = (ks[0], self.temperatures[0]), np.inf
        for K in ks:
            cents = _kmeans(xn[~val], K, self.seed)
            d2_fit = _sq_dist(xn[~val], cents)
            prof, _ = _profiles(d2_fit.argmin(axis=1), scores[~val], K, self.prior)
            spread, d2_val = float(d2_fit.min(axis=1).mean()), _sq_dist(xn[val], cents)
            for t in self.temperatures:
                loss = brier(_soft_weights(d2_val, t * spread) @ prof, scores[val])
                self.val_brier[f"K={K},t={t}"] = loss
                if loss < best_loss - 1e-12:
                    best, best_loss = (K, t), loss
        return best

    def weights(self, X: Any) -> np.ndarray:
        """Soft cluster assignment [n, K]."""
        assert self.centroids is not None, "fit first"
        return _soft_weights(_sq_dist(_unit_rows(X), self.centroids), self.tau)

    def assign(self, X: Any) -> np.ndarray:
        """Nearest centroid per row [n] (int64)."""
        assert self.centroids is not None, "fit first"
        return _sq_dist(_unit_rows(X), self.centroids).argmin(axis=1).astype(np.int64)

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self.profile is not None, "fit first"
        return self.weights(X) @ self.profile

    def add_model(self, X: Any, s: np.ndarray) -> int:
        """Append a model's profile from its own labelled prompts (shrunk to its global mean); its index."""
        assert self.profile is not None and self.counts is not None and self.centroids is not None, "fit first"
        prof, cnt = _profiles(self.assign(X), np.asarray(s, dtype=np.float64)[:, None], len(self.centroids), self.prior)
        self.profile, self.counts = np.hstack([self.profile, prof]), np.hstack([self.counts, cnt])
        return self.profile.shape[1] - 1


# ------------------------------------------------------------------------------------------------- blend


@dataclass
class BlendScorer:
    """Σ wᵢ · partᵢ, each part reading its own feature kind; the weights are given, not fitted here.

    ``X`` is a mapping kind → feature matrix. :func:`router_models.selection.select_scorer` chooses the
    weights on cross-fitted predictions (greedy ensemble selection); ``fit`` refits every part on all rows
    with ``val`` as their validation rows.
    """

    parts: tuple[Any, ...]
    kinds: tuple[str, ...]
    weights: tuple[float, ...] = ()
    name: str = "blend"

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.kinds) or len(self.parts) < 1:
            raise ValueError(f"a blend needs one feature kind per part; got {len(self.parts)} and {len(self.kinds)}")
        w = np.asarray(self.weights or [1.0] * len(self.parts), dtype=np.float64)
        if w.shape != (len(self.parts),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"blend weights must be {len(self.parts)} non-negative numbers, not all 0: {self.weights}")
        self.weights = tuple(float(x) for x in w / w.sum())

    def fit(self, X: Mapping[str, Any], scores: np.ndarray, val: np.ndarray | None = None) -> BlendScorer:
        for part, kind in zip(self.parts, self.kinds, strict=True):
            part.fit(X[kind], scores, val)
        return self

    def predict_parts(self, X: Mapping[str, Any]) -> list[np.ndarray]:
        """Every part's predicted quality [n, m], in part order."""
        return [p.predict_quality(X[k]) for p, k in zip(self.parts, self.kinds, strict=True)]

    def predict_quality(self, X: Mapping[str, Any]) -> np.ndarray:
        return weighted_sum(self.weights, self.predict_parts(X))


def weighted_sum(weights: Sequence[float], preds: Sequence[np.ndarray]) -> np.ndarray:
    """Σ wᵢ · predsᵢ (a blend's prediction from its parts' predictions)."""
    return np.asarray(sum((w * q for w, q in zip(weights, preds, strict=True)), np.zeros(())))


# ------------------------------------------------------------------------------------------------ oracle


@dataclass
class TaskOracle:
    """Per-task mean score from train (uses the task label: a reference, not a router)."""

    name: str = "task_oracle"
    table: dict[str, np.ndarray] = field(default_factory=dict)
    fallback: np.ndarray | None = None

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> TaskOracle:
        tasks = np.asarray(X)
        self.fallback = column_means(scores)
        for task in np.unique(tasks):
            rows = scores[tasks == task]
            counts = (~np.isnan(rows)).sum(axis=0)
            self.table[str(task)] = np.where(counts > 0, np.nansum(rows, axis=0) / np.maximum(counts, 1), np.nan)
        return self

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self.fallback is not None, "fit first"
        rows = [self.table.get(str(t), self.fallback) for t in np.asarray(X)]
        out = np.array(rows, dtype=np.float64)
        return np.where(np.isnan(out), self.fallback, out)


# ----------------------------------------------------------------------------------------- plain arrays

Arrays = dict[str, np.ndarray]


def blend_part_tags(n: int) -> list[str]:
    """Array-name prefixes of a blend's parts: a, b, c, …"""
    if n > 26:
        raise ValueError(f"a blend has at most 26 parts, not {n}")
    return [chr(ord("a") + i) for i in range(n)]


def scorer_state(scorer: Any) -> tuple[str, dict[str, Any], Arrays]:
    """(type, JSON-able params, arrays) of a fitted deployable scorer; inverse of :func:`scorer_from_state`."""
    if isinstance(scorer, ProbeScorer):
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
        arrays = {"coef": scorer.coef, "intercept": scorer.intercept, "mean": scorer.mean_, "scale": scorer.scale_}
        return "probe", params, arrays
    if isinstance(scorer, ClusterScorer):
        assert scorer.centroids is not None and scorer.profile is not None and scorer.counts is not None
        params = {"name": scorer.name, "ks": list(scorer.ks), "temperatures": list(scorer.temperatures)}
        params |= {"prior": scorer.prior, "seed": scorer.seed, "tau": scorer.tau, "K": len(scorer.centroids)}
        return "cluster", params, {"centroids": scorer.centroids, "profile": scorer.profile, "counts": scorer.counts}
    if isinstance(scorer, KNNScorer):
        assert scorer._x is not None and scorer._s is not None
        params = {"name": scorer.name, "ks": list(scorer.ks), "k": scorer.k}
        x = scorer._x
        if sp.issparse(x):
            arrays = {"x_data": x.data, "x_indices": x.indices, "x_indptr": x.indptr, "s": scorer._s}
            return "knn", params | {"sparse_shape": list(x.shape)}, arrays
        return "knn", params, {"x": x, "s": scorer._s}
    if isinstance(scorer, BlendScorer):
        parts, arrays = [], {}
        for tag, part in zip(blend_part_tags(len(scorer.parts)), scorer.parts, strict=True):
            kind, p, a = scorer_state(part)
            parts.append({"type": kind, "params": p})
            arrays |= {f"{tag}.{k}": v for k, v in a.items()}
        params = {"name": scorer.name, "kinds": list(scorer.kinds), "weights": list(scorer.weights)}
        return "blend", params | {"parts": parts}, arrays
    raise TypeError(f"cannot export scorer of type {type(scorer).__name__}")


def scorer_from_state(kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """Rebuild a fitted scorer from :func:`scorer_state`'s output."""
    if kind == "probe":
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
    if kind == "cluster":
        return ClusterScorer(
            ks=tuple(params["ks"]),
            temperatures=tuple(params["temperatures"]),
            prior=float(params["prior"]),
            seed=int(params["seed"]),
            name=params["name"],
            centroids=arrays["centroids"],
            profile=arrays["profile"],
            counts=arrays["counts"],
            tau=float(params["tau"]),
        )
    if kind == "knn":
        x: Any = arrays.get("x")
        if "sparse_shape" in params:
            parts = (arrays["x_data"], arrays["x_indices"], arrays["x_indptr"])
            x = sp.csr_matrix(parts, shape=tuple(params["sparse_shape"]))
        return KNNScorer(ks=tuple(params["ks"]), k=params["k"], name=params["name"], _x=x, _s=arrays["s"])
    if kind == "blend":
        tags = blend_part_tags(len(params["parts"]))
        parts = tuple(
            scorer_from_state(p["type"], p["params"], {k[2:]: v for k, v in arrays.items() if k.startswith(f"{t}.")})
            for t, p in zip(tags, params["parts"], strict=True)
        )
        return BlendScorer(parts, tuple(params["kinds"]), tuple(params["weights"]), name=params["name"])
    raise ValueError(f"unknown scorer type {kind!r}; expected probe, cluster, knn or blend")

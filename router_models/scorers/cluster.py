"""``cluster``: UniRoute (Jitkrittum et al. 2025, arXiv 2502.08773, §4.2).

In:  feature rows ``[n, d]``, scores ``[n, m]``.
Out: quality ``[q, m]``: k-means over unit-norm prompt features; each model is its vector of per-cluster mean
     scores, shrunk toward its global mean; a prompt's quality is the soft-assignment-weighted profile. A new
     model is added from a few hundred labelled prompts without refitting anything else
     (:meth:`ClusterScorer.add_model`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_models.scorers.base import Arrays, brier, column_means, has_split, unit_rows
from router_models.scorers.registry import Preset, ScorerKind, Shapes, width

__all__ = ["KIND", "ClusterScorer"]


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
        xn = unit_rows(X)
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
        if val is None or not has_split(val) or len(ks) * len(self.temperatures) == 1:
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
        return _soft_weights(_sq_dist(unit_rows(X), self.centroids), self.tau)

    def assign(self, X: Any) -> np.ndarray:
        """Nearest centroid per row [n] (int64)."""
        assert self.centroids is not None, "fit first"
        return _sq_dist(unit_rows(X), self.centroids).argmin(axis=1).astype(np.int64)

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self.profile is not None, "fit first"
        return self.weights(X) @ self.profile

    def add_model(self, X: Any, s: np.ndarray) -> int:
        """Append a model's profile from its own labelled prompts (shrunk to its global mean); its index."""
        assert self.profile is not None and self.counts is not None and self.centroids is not None, "fit first"
        prof, cnt = _profiles(self.assign(X), np.asarray(s, dtype=np.float64)[:, None], len(self.centroids), self.prior)
        self.profile, self.counts = np.hstack([self.profile, prof]), np.hstack([self.counts, cnt])
        return self.profile.shape[1] - 1


def to_state(scorer: ClusterScorer) -> tuple[dict[str, Any], Arrays]:
    assert scorer.centroids is not None and scorer.profile is not None and scorer.counts is not None
    params: dict[str, Any] = {"name": scorer.name, "ks": list(scorer.ks), "temperatures": list(scorer.temperatures)}
    params |= {"prior": scorer.prior, "seed": scorer.seed, "tau": scorer.tau, "K": len(scorer.centroids)}
    return params, {"centroids": scorer.centroids, "profile": scorer.profile, "counts": scorer.counts}


def from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ClusterScorer:
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


def shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    return {
        "centroids": ((None, d), f"clusters × {width(d)}"),
        "profile": ((None, m), f"clusters × {m} models"),
        "counts": ((None, m), f"clusters × {m} models"),
    }


KIND = ScorerKind(
    name="cluster",
    cls=ClusterScorer,
    features=("sae", "dense"),
    to_state=to_state,
    from_state=from_state,
    shapes=shapes,
    presets=(
        Preset(
            "cluster",
            "dense",
            roles=("candidate", "baseline"),
            description="UniRoute k-means clusters on the dense pooled hidden state",
            label="cluster (dense)",
        ),
    ),
)

"""``knn``: cosine k-nearest neighbours; a model's quality is its mean score over the neighbours that have one.

In:  feature rows ``[n, d]`` (numpy, or scipy sparse for SAE latents: kept sparse), scores ``[n, m]``.
Out: quality ``[q, m]``; k is chosen on the validation rows (one k for all models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from router_models.scorers.base import Arrays, brier, column_means, has_split, unit_rows
from router_models.scorers.registry import Preset, ScorerKind, Shapes, width

__all__ = ["KIND", "KNNScorer", "knn_predict"]


def knn_predict(train_x: Any, train_s: np.ndarray, query_x: Any, k: int) -> np.ndarray:
    """Mean neighbour score per model ([q, m]); rows of train_x/query_x (dense or sparse) must be unit-norm.

    A plain numpy/scipy search (cosine = dot product of unit rows), not scikit-learn's NearestNeighbors:
    serving must not need scikit-learn (the ``train`` extra; tests/test_extras.py)."""
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
        xn = unit_rows(X)
        if val is not None and has_split(val):
            for k in self.ks:
                pred = knn_predict(xn[~val], scores[~val], xn[val], k)
                self.val_brier[k] = brier(pred, scores[val])
            self.k = min(self.val_brier, key=lambda k: (self.val_brier[k], k))
        self.k = self.k or 20
        self._x, self._s = xn, np.asarray(scores, dtype=np.float64)
        return self

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self._x is not None and self._s is not None and self.k is not None, "fit first"
        return knn_predict(self._x, self._s, unit_rows(X), self.k)


def to_state(scorer: KNNScorer) -> tuple[dict[str, Any], Arrays]:
    assert scorer._x is not None and scorer._s is not None
    params = {"name": scorer.name, "ks": list(scorer.ks), "k": scorer.k}
    x = scorer._x
    if sp.issparse(x):
        arrays = {"x_data": x.data, "x_indices": x.indices, "x_indptr": x.indptr, "s": scorer._s}
        return params | {"sparse_shape": list(x.shape)}, arrays
    return params, {"x": x, "s": scorer._s}


def from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> KNNScorer:
    x: Any = arrays.get("x")
    if "sparse_shape" in params:
        parts = (arrays["x_data"], arrays["x_indices"], arrays["x_indptr"])
        x = sp.csr_matrix(parts, shape=tuple(params["sparse_shape"]))
    return KNNScorer(ks=tuple(params["ks"]), k=params["k"], name=params["name"], _x=x, _s=arrays["s"])


def shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    if "sparse_shape" not in params:
        return {"x": ((None, d), f"prompts × {width(d)}"), "s": ((None, m), f"prompts × {m} models")}
    n_rows, n_cols = params["sparse_shape"]
    if d is not None and n_cols != d:
        raise ValueError(f"stores {n_cols} features but the router has {width(d)}")
    nnz = arrays["x_data"].shape if "x_data" in arrays else (None,)
    return {
        "x_data": (nnz, "non-zeros"),
        "x_indices": (nnz, "non-zeros"),
        "x_indptr": ((n_rows + 1,), f"{n_rows} prompts + 1"),
        "s": ((n_rows, m), f"{n_rows} prompts × {m} models"),
    }


KIND = ScorerKind(
    name="knn",
    cls=KNNScorer,
    features=("sae", "dense"),
    to_state=to_state,
    from_state=from_state,
    shapes=shapes,
    presets=(
        Preset("knn", "dense", description="cosine kNN on the dense pooled hidden state", label="knn (dense)"),
        Preset("sae_knn", "sae", {"name": "sae_knn"}, description="cosine kNN on pooled SAE latents", label="sae knn"),
    ),
)

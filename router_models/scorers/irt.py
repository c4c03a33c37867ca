"""``irt``: a scorer built to transfer across tasks: item response theory with prompt parameters read off features.

In:  prompt features ``[n, d]`` (numpy, or scipy sparse such as pooled SAE latents) and scores ``[n, m]`` in
     [0, 1] with NaN where a model was not run on a prompt.
Out: predicted quality ``[n, m]`` for new prompts.

The model (a multidimensional 2PL item-response model whose item side is a function of the prompt, as in
IRT-Router, Song et al. 2025, and EmbedLLM's model embeddings, Zhuang et al. 2024)::

    logit P(model m answers x well) = θ_m + e(x) + ⟨a_m, U·x⟩

θ_m is the model's overall ability and a_m ∈ R^k its skill profile; e(x) = w·x + c is how easy the prompt is and
U·x ∈ R^k which skills it loads on. Everything is fitted jointly by minimising the cross-entropy over the
observed (prompt, model) entries only, with L2 on w, U and a. Two properties follow that per-model probes lack:

- **No missing-not-at-random bias.** A model run only on an easy task is compared with the other models on the
  same prompts: e(x) absorbs the ease, so θ_m is not inflated, and the model is not predicted strong elsewhere.
- **Sharing across models.** The prompt side is learned from every model's results at once (k + 1 numbers per
  prompt instead of m independent probes), which is what carries over to a task none of the training prompts
  came from; the model side pools every file a model appears in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp

from router_models.scorers.base import Arrays, column_means
from router_models.scorers.registry import Preset, ScorerKind, Shapes

__all__ = ["KIND", "IRTScorer"]


def _rows_times(x: Any, W: Any) -> Any:
    """``x @ W`` for a constant ``x`` [n, d], whose backward computes dW as ``(dY.T @ x).T``: torch's own
    ``x.T @ dY`` took ~20× longer on CPU here (834 vs 42 ms for 4,000 × 6,144 by 9)."""
    import torch

    class RowsTimes(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, w: Any) -> Any:
            return x @ w

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return (grad.T @ x).T

    return RowsTimes.apply(W)


DENSE_LIMIT = 1 << 28  # sparse inputs up to this many cells (1 GiB of float32) are fitted as dense tensors


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the duration: the fit is hundreds of small full-batch steps, where a second
    intra-op thread mostly waits (and on a busy machine its spin-waits made a 100-prompt fit take minutes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class IRTScorer:
    """Joint IRT / low-rank scorer; see the module docstring. ``l2`` is chosen on ``val`` when given."""

    def __init__(
        self,
        name: str = "irt",
        dim: int = 8,
        l2: Sequence[float] = (1e-4, 1e-3, 1e-2),
        epochs: int = 300,
        lr: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.name, self.dim, self.l2_grid, self.epochs, self.lr, self.seed = name, dim, tuple(l2), epochs, lr, seed
        self.l2: float | None = None
        self.params: dict[str, np.ndarray] = {}
        self.center: np.ndarray | None = None  # [d] (dense input only)
        self.scale: np.ndarray | None = None  # [d]

    # ------------------------------------------------------------------------------------------ inputs
    def _prepare(self, X: Any, fit: bool) -> Any:
        """Dense: standardized columns. Sparse: columns divided by their max |value| (keeps zeros zero)."""
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float32)
            if fit:
                self.center = None
                self.scale = np.maximum(np.asarray(abs(X).max(axis=0).todense()).ravel(), 1e-6).astype(np.float32)
            assert self.scale is not None
            scaled = X.copy()  # each stored value divided by its column's scale (a diagonal product, no matmul)
            scaled.data *= (1.0 / self.scale).astype(np.float32)[scaled.indices]
            return scaled
        X = np.asarray(X, dtype=np.float32)
        if fit:
            self.center = X.mean(axis=0)
            self.scale = np.maximum(X.std(axis=0), 1e-6)
        assert self.center is not None and self.scale is not None
        return (X - self.center) / self.scale

    @staticmethod
    def _tensor(X: Any) -> Any:
        import torch

        if sp.issparse(X) and X.shape[0] * X.shape[1] <= DENSE_LIMIT:
            # Dense matmuls: torch's sparse backward over millions of non-zeros took ~2 s per epoch on one core
            # (4,000 prompts × 6,144 pooled latents); the dense copy (~100 MB) takes ~40 ms.
            return torch.from_numpy(np.asarray(X.toarray(), dtype=np.float32))
        if sp.issparse(X):
            coo = X.tocoo()
            idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape, check_invariants=True).coalesce()
        return torch.from_numpy(np.ascontiguousarray(X))

    # --------------------------------------------------------------------------------------------- fit
    def _train(self, X: Any, scores: np.ndarray, l2: float) -> dict[str, np.ndarray]:

        with one_thread():
            return self._train_1(X, scores, l2)

    def _train_1(self, X: Any, scores: np.ndarray, l2: float) -> dict[str, np.ndarray]:
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        d = X.shape[1]
        m = scores.shape[1]
        xt = self._tensor(X)
        observed = torch.from_numpy(~np.isnan(scores))
        target = torch.from_numpy(np.nan_to_num(scores, nan=0.0).astype(np.float32))
        # Start each model at its observed mean (logit), everything else small.
        mean = np.clip(column_means(scores), 0.02, 0.98)
        theta = torch.tensor(np.log(mean / (1 - mean)), dtype=torch.float32, requires_grad=True)
        w = torch.zeros(d, requires_grad=True)
        c = torch.zeros(1, requires_grad=True)
        U = (0.01 * torch.randn(d, self.dim, generator=gen)).requires_grad_()
        A = (0.1 * torch.randn(m, self.dim, generator=gen)).requires_grad_()
        opt = torch.optim.Adam([theta, w, c, U, A], lr=self.lr)
        n_obs = observed.sum().clamp(min=1)
        for _ in range(self.epochs):
            opt.zero_grad()
            logits = self._logits(xt, theta, w, c, U, A)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = (loss * observed).sum() / n_obs
            loss = loss + l2 * ((w**2).sum() + (U**2).sum() + (A**2).sum())
            loss.backward()
            opt.step()
        return {
            k: v.detach().numpy().copy()
            for k, v in zip(["theta", "w", "c", "U", "A"], (theta, w, c, U, A), strict=True)
        }

    @staticmethod
    def _logits(xt: Any, theta: Any, w: Any, c: Any, U: Any, A: Any) -> Any:
        import torch

        W = torch.cat([w[:, None], U], dim=1)  # [d, 1 + k]: easiness and skill loadings in one product
        xw = torch.sparse.mm(xt, W) if xt.is_sparse else _rows_times(xt, W)
        return theta[None, :] + xw[:, :1] + c + xw[:, 1:] @ A.T

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> IRTScorer:
        scores = np.asarray(scores, dtype=np.float64)
        Xp = self._prepare(X, fit=True)
        self.l2 = self.l2_grid[0]
        if val is not None and val.any() and (~val).any() and len(self.l2_grid) > 1:
            mask = ~np.isnan(scores[val])
            losses = []
            for l2 in self.l2_grid:
                self.params = self._train(Xp[~val], scores[~val], l2)
                p = np.clip(self._predict_prepared(Xp[val]), 1e-6, 1 - 1e-6)
                y = scores[val]
                losses.append(-np.mean((y * np.log(p) + (1 - y) * np.log(1 - p))[mask]))
            self.l2 = self.l2_grid[int(np.argmin(losses))]
        self.params = self._train(Xp, scores, self.l2)
        return self

    # ----------------------------------------------------------------------------------------- predict
    def _predict_prepared(self, Xp: Any) -> np.ndarray:
        import torch

        p = {k: torch.from_numpy(v) for k, v in self.params.items()}
        with torch.no_grad():
            z = self._logits(self._tensor(Xp), p["theta"], p["w"], p["c"], p["U"], p["A"])
        return torch.sigmoid(z).numpy().astype(np.float64)

    def predict_quality(self, X: Any) -> np.ndarray:
        if not self.params:
            raise RuntimeError("IRTScorer.predict_quality before fit")
        return self._predict_prepared(self._prepare(X, fit=False))

    def abilities(self) -> np.ndarray:
        """θ_m: each model's overall ability (logit scale), [m]."""
        return self.params["theta"].copy()


def to_state(scorer: IRTScorer) -> tuple[dict[str, Any], Arrays]:
    assert scorer.params and scorer.scale is not None, "fit first"
    params = {
        "name": scorer.name,
        "dim": scorer.dim,
        "l2_grid": list(scorer.l2_grid),
        "l2": scorer.l2,
        "epochs": scorer.epochs,
        "lr": scorer.lr,
        "seed": scorer.seed,
        "sparse": scorer.center is None,
    }
    arrays = {**scorer.params, "scale": scorer.scale}
    if scorer.center is not None:
        arrays["center"] = scorer.center
    return params, arrays


def from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> IRTScorer:
    s = IRTScorer(params["name"], params["dim"], params["l2_grid"], params["epochs"], params["lr"], params["seed"])
    s.l2 = params["l2"]
    s.params = {k: np.asarray(arrays[k]) for k in ("theta", "w", "c", "U", "A")}
    s.scale = np.asarray(arrays["scale"])
    s.center = None if params["sparse"] else np.asarray(arrays["center"])
    return s


def shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    k = int(params["dim"])
    out: Shapes = {
        "theta": ((m,), f"{m} models"),
        "A": ((m, k), f"{m} models × {k} skills"),
        "w": ((d,), "features"),
        "c": ((1,), "one intercept"),
        "U": ((d, k), f"features × {k} skills"),
        "scale": ((d,), "features"),
    }
    if not params["sparse"]:
        out["center"] = ((d,), "features")
    return out


KIND = ScorerKind(
    name="irt",
    cls=IRTScorer,
    features=("sae", "dense"),
    to_state=to_state,
    from_state=from_state,
    shapes=shapes,
    presets=(  # candidates and harness routers; not baselines (it is the scorer the baselines are measured against)
        Preset(
            "irt",
            "dense",
            roles=("candidate", "harness"),
            description="joint IRT (abilities × prompt skills), dense",
        ),
        Preset(
            "sae_irt",
            "sae",
            {"name": "sae_irt"},
            roles=("candidate", "harness"),
            description="joint IRT on SAE latents",
        ),
    ),
)

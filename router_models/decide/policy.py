"""The routing decision: pick the model with the best predicted quality minus λ·cost.

In:  predicted quality ``[n_prompts, n_models]``, predicted cost ``[n_prompts, n_models]`` (or ``[n_models]``),
     a trade-off λ ≥ 0, and which models are allowed for each prompt.
Out: the chosen model index per prompt.

Pure numpy, no I/O: the gateway, the evaluation harness and the CLIs all call the same function, so what is
measured is what is served. Ties (equal utility) go to the cheaper model, then to the lower index.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TIE_ATOL", "argmax_utility"]

# Utilities closer than this are treated as equal, so the cheaper model wins the tie. Scores live in [0, 1],
# so 1e-12 is far below any real difference while absorbing float round-off between equivalent predictions.
TIE_ATOL = 1e-12


def argmax_utility(quality: np.ndarray, cost: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Index of argmax(quality − lam·cost) per row over allowed models; ties to the cheaper model.

    quality: [n, m]; cost: [n, m] or [m]; allowed: [n, m] or [m] bool (None = all).
    Returns [n] int64. A row with no allowed model gets -1.
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), q.shape)
    util = q - lam * c if lam else q.copy()
    if allowed is not None:
        util = np.where(np.broadcast_to(allowed, q.shape), util, -np.inf)
    best = util.max(axis=1, keepdims=True)
    tied = util >= best - TIE_ATOL
    # Among tied models take the cheapest; argmin returns the first (lowest index) on equal cost.
    idx = np.argmin(np.where(tied, c, np.inf), axis=1)
    idx[~np.isfinite(best[:, 0])] = -1
    return idx.astype(np.int64)

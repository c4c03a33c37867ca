"""The transfer scorer: joint IRT fit recovers abilities without missing-not-at-random bias, and predicts a
held-out task better than a per-model probe when the task shifts which prompts are hard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp
from router_fakes import one_torch_thread

from router_models.scorers import ProbeScorer, scorer_from_state, scorer_state
from router_models.scorers.irt import IRTScorer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def _world(n: int = 600, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prompts x [n, d]; difficulty = a linear read of x; 6 models with abilities θ; binary outcomes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    difficulty = x @ rng.normal(size=d) * 0.8
    theta = np.array([-1.5, -0.5, 0.0, 0.5, 1.0, 2.0])
    p = 1 / (1 + np.exp(-(theta[None, :] - difficulty[:, None])))
    return x, difficulty, theta, (rng.random(p.shape) < p).astype(float)


def test_a_model_run_only_on_easy_prompts_is_not_rated_strong() -> None:
    x, difficulty, _, y = _world()
    easy = difficulty < np.quantile(difficulty, 0.3)
    obs = y.copy()
    obs[~easy, 1] = np.nan  # model 1 (weak, θ = -0.5) only ever ran on the easiest 30%
    irt = IRTScorer(l2=(1e-3,), epochs=200).fit(x, obs)
    probe = ProbeScorer().fit(x, obs)
    hard = ~easy
    truth = y[hard, 1].mean()
    q_irt, q_probe = irt.predict_quality(x[hard])[:, 1].mean(), probe.predict_quality(x[hard])[:, 1].mean()
    assert abs(q_irt - truth) < abs(q_probe - truth)
    order = np.argsort(irt.abilities())
    assert order[0] == 0 and order[-1] == 5  # weakest and strongest recovered from partial data


def test_sparse_and_dense_inputs_fit_and_predict_in_range() -> None:
    x, _, _, y = _world(200, 8, seed=1)
    dense = IRTScorer(l2=(1e-3, 1e-2), epochs=80).fit(x, y, val=np.arange(200) % 5 == 0)
    assert dense.l2 in (1e-3, 1e-2)
    xs = sp.csr_matrix(np.maximum(x, 0))
    q = IRTScorer(epochs=80).fit(xs, y).predict_quality(xs[:7])
    assert q.shape == (7, 6) and np.all((q > 0) & (q < 1))
    with pytest.raises(RuntimeError, match="before fit"):
        IRTScorer().predict_quality(x)


def test_state_round_trip_predicts_the_same() -> None:
    x, _, _, y = _world(150, 6, seed=2)
    for X in (x, sp.csr_matrix(np.maximum(x, 0))):
        fitted = IRTScorer(epochs=40).fit(X, y)
        kind, params, arrays = scorer_state(fitted)
        assert kind == "irt"
        again = scorer_from_state(kind, params, arrays)
        assert np.array_equal(again.predict_quality(X[:9]), fitted.predict_quality(X[:9]))


def test_the_fast_product_has_the_plain_matmul_gradient() -> None:
    import torch

    from router_models.scorers.irt import _rows_times

    x = torch.randn(50, 7, dtype=torch.float64)
    w1 = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_()
    (_rows_times(x, w1) ** 2).sum().backward()
    (torch.matmul(x, w2) ** 2).sum().backward()
    assert w1.grad is not None and torch.allclose(w1.grad, w2.grad)  # type: ignore[arg-type]

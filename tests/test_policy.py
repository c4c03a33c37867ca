"""The pure routing decision on hand-made cases."""

from __future__ import annotations

import numpy as np

from router_models.decide.policy import argmax_utility


def test_lambda_zero_takes_best_quality() -> None:
    q = np.array([[0.2, 0.9, 0.5]])
    assert argmax_utility(q, np.array([1.0, 3.0, 2.0]), 0.0).tolist() == [1]


def test_large_lambda_takes_cheapest() -> None:
    q = np.array([[0.2, 0.9, 0.5]])
    assert argmax_utility(q, np.array([1.0, 3.0, 2.0]), 100.0).tolist() == [0]


def test_tradeoff_in_between() -> None:
    # utilities at λ=0.2: 0.0, 0.3, 0.1 -> model 1
    q = np.array([[0.2, 0.9, 0.5]])
    assert argmax_utility(q, np.array([1.0, 3.0, 2.0]), 0.2).tolist() == [1]
    # at λ=0.4: -0.2, -0.3, -0.3 -> model 0
    assert argmax_utility(q, np.array([1.0, 3.0, 2.0]), 0.4).tolist() == [0]


def test_ties_go_to_cheaper_then_lower_index() -> None:
    q = np.array([[0.5, 0.5, 0.5]])
    assert argmax_utility(q, np.array([3.0, 1.0, 2.0]), 0.0).tolist() == [1]
    assert argmax_utility(q, np.array([1.0, 1.0, 2.0]), 0.0).tolist() == [0]


def test_allowed_mask_and_no_allowed_model() -> None:
    q = np.array([[0.2, 0.9], [0.3, 0.8]])
    allowed = np.array([[True, False], [False, False]])
    assert argmax_utility(q, np.array([1.0, 2.0]), 0.0, allowed).tolist() == [0, -1]


def test_per_prompt_costs() -> None:
    q = np.array([[0.5, 0.6], [0.5, 0.6]])
    c = np.array([[1.0, 2.0], [1.0, 1.01]])
    assert argmax_utility(q, c, 0.5).tolist() == [0, 1]


def test_decide_ranking_constraints_and_interval() -> None:
    import pytest

    from router_models.decide.engine import Constraints, NoEligibleModel, PromptScores, decide

    models = ("a", "b", "c")
    s = PromptScores(quality=np.array([0.2, 0.9, 0.5]), cost=np.array([1.0, 3.0, 2.0]))
    d = decide(models, s, 0.2)
    assert d.model == "b" and d.ranking == ("b", "c", "a")
    # b beats c while 0.4 − λ ≥ 0 and beats a while 0.7 − 2λ ≥ 0: λ ∈ [0, 0.35]
    assert d.lambda_interval == pytest.approx((0.0, 0.35))
    assert decide(models, s, 0.2, Constraints(allowed=("a", "c"))).model == "c"
    assert decide(models, s, 0.0, Constraints(max_cost=2.5)).model == "c"
    assert decide(models, s, 10.0, Constraints(min_quality=0.4)).model == "c"
    with pytest.raises(NoEligibleModel):
        decide(models, s, 0.0, Constraints(max_cost=0.5))
    with pytest.raises(NoEligibleModel, match="unknown"):
        decide(models, s, 0.0, Constraints(allowed=("zzz",)))
    with pytest.raises(ValueError):
        decide(models, s, -1.0)

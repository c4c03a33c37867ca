"""Metrics against hand-computed tiny cases (see the arithmetic in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router_models.evaluate.metrics import (
    auc,
    curve_metrics,
    evaluate_router,
    lambda_grid,
    paired_bootstrap,
    random_mixing,
    reference_points,
    sweep,
    upper_envelope,
)

MODELS = ("cheap", "strong")
# p0: only strong right; p1: both right; p2: both wrong; p3: only strong right. cheap costs 1, strong 10.
TRUE_Q = np.array([[0, 1], [1, 1], [0, 0], [0, 1]], dtype=float)
TRUE_C = np.tile([1.0, 10.0], (4, 1))


def test_reference_points_hand_case() -> None:
    refs = reference_points(TRUE_Q, TRUE_C, MODELS)
    assert refs["cheapest"].model == "cheap"
    assert (refs["cheapest"].cost, refs["cheapest"].quality) == (1.0, 0.25)
    assert refs["best_single"].model == "strong"
    assert (refs["best_single"].cost, refs["best_single"].quality) == (10.0, 0.75)
    # Oracle: strong, cheap (tie -> cheaper), cheap (tie at 0 -> cheaper), strong: cost 22/4.
    assert refs["oracle"].cost == pytest.approx(5.5)
    assert refs["oracle"].quality == pytest.approx(0.75)


def test_perfect_router_hand_case() -> None:
    """Predicting the truth gives two operating points: (5.5, 0.75) at λ=0, (1, 0.25) for λ ≥ 1/9."""
    result = evaluate_router(TRUE_Q, np.array([1.0, 10.0]), TRUE_Q, TRUE_C, MODELS)
    pts = {tuple(p) for p in result["curve"]}
    assert pts == {(5.5, 0.75), (1.0, 0.25)}
    assert result["peak_quality"] == 0.75
    assert result["cost_at_95"] == pytest.approx(0.55)  # 5.5 / 10
    assert result["quality_at_best_cost"] == pytest.approx(0.75)
    # Envelope: line (1, .25)->(5.5, .75), then flat .75 to 10: area 2.25 + 3.375 over 0.75 * 9.
    assert result["auc"] == pytest.approx(5.625 / 6.75)
    # PGR vs strong share: (0,0) -> (0.5, 1) -> flat: APGR = 0.25 + 0.5; CPT(50%) = CPT(80%) = 0.5.
    assert result["apgr"] == pytest.approx(0.75, abs=1e-3)
    assert result["cpt50"] == pytest.approx(0.5)
    assert result["cpt80"] == pytest.approx(0.5)


def test_random_mixing_is_the_straight_line() -> None:
    refs = reference_points(TRUE_Q, TRUE_C, MODELS)
    rnd = random_mixing(refs)
    assert rnd["curve"] == [[1.0, 0.25], [10.0, 0.75]]
    assert rnd["auc"] == pytest.approx(4.5 / 6.75)


def test_constant_router_never_reaches_95() -> None:
    """A router that always predicts cheap is better sits at (1, 0.25) for every λ."""
    pred = np.tile([1.0, 0.0], (4, 1))
    result = evaluate_router(pred, np.array([1.0, 10.0]), TRUE_Q, TRUE_C, MODELS)
    assert {tuple(p) for p in result["curve"]} == {(1.0, 0.25)}
    assert math.isinf(result["cost_at_95"])
    assert result["auc"] == pytest.approx(0.25 / 0.75)  # flat 0.25 over the whole range
    assert result["apgr"] == pytest.approx(0.5, abs=1e-3)  # only the anchors: the random line


def test_nan_score_model_is_never_chosen() -> None:
    """Model 'c' is predicted best everywhere but has no result on prompt 0: it must not be picked there."""
    true_q = np.array([[1.0, 0.0, np.nan], [0.0, 0.0, 1.0]])
    true_c = np.array([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5]])
    pred = np.array([[0.1, 0.2, 0.9], [0.1, 0.2, 0.9]])
    curve = sweep(pred, np.array([1.0, 2.0, 0.5]), true_q, true_c, lambdas=np.array([0.0]))
    # p0 falls back to 'b' (0.2 > 0.1): quality 0, cost 2; p1 takes 'c': quality 1, cost 0.5.
    assert curve.cost[0] == pytest.approx(1.25)
    assert curve.quality[0] == pytest.approx(0.5)
    refs = reference_points(true_q, true_c, ("a", "b", "c"))
    assert refs["best_single"].model in {"a", "b"}  # 'c' is incomplete, so not a single-model baseline
    assert refs["oracle"].quality == 1.0
    assert refs["oracle"].cost == pytest.approx(0.75)


def test_ties_go_to_the_cheaper_model() -> None:
    pred = np.full((4, 2), 0.5)
    curve = sweep(pred, np.array([1.0, 10.0]), TRUE_Q, TRUE_C, lambdas=np.array([0.0]))
    assert curve.share[0].tolist() == [1.0, 0.0]


def test_lambda_grid_spans_best_to_cheapest() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((50, 5))
    cost = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    lams = lambda_grid(pred, cost)
    assert lams[0] == 0.0
    q = np.tile(pred, 1)
    first = sweep(pred, cost, q, np.tile(cost, (50, 1)), lambdas=lams[:1])
    last = sweep(pred, cost, q, np.tile(cost, (50, 1)), lambdas=lams[-1:])
    assert first.share[0].tolist() == (np.bincount(pred.argmax(1), minlength=5) / 50).tolist()
    assert last.share[0, 0] == 1.0  # everything to the cheapest


def test_equal_costs_give_degenerate_auc() -> None:
    """routerdc7-like: every model costs the same, so auc is quality over best single quality."""
    true_q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    true_c = np.ones((3, 2))
    result = evaluate_router(true_q, np.array([1.0, 1.0]), true_q, true_c, ("a", "b"))
    assert result["peak_quality"] == 1.0
    assert result["auc"] == pytest.approx(1.0 / (2 / 3))


def test_upper_envelope_is_concave_and_monotone() -> None:
    xs, ys = upper_envelope(np.array([1, 2, 3, 4, 5, 2]), np.array([0.1, 0.2, 0.9, 0.5, 0.95, 0.8]))
    assert xs.tolist() == [1, 2, 3, 5]
    assert ys.tolist() == [0.1, 0.8, 0.9, 0.95]


def test_auc_below_first_point_counts_zero() -> None:
    # A single point at cost 5 on range [1, 9]: zero until 5, then 0.5 until 9 -> area 2 of 4 * 1.
    assert auc(np.array([5.0]), np.array([0.5]), 1.0, 9.0, 0.5) == pytest.approx(0.5, abs=1e-9)


def test_curve_metrics_keys_without_two_models() -> None:
    true_q = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    true_c = np.tile([1.0, 2.0, 3.0], (2, 1))
    refs = reference_points(true_q, true_c, ("a", "b", "c"))
    curve = sweep(true_q, np.array([1.0, 2.0, 3.0]), true_q, true_c, models=("a", "b", "c"))
    metrics = curve_metrics(curve, refs)
    assert set(metrics) == {"peak_quality", "quality_at_best_cost", "cost_at_95", "auc"}
    assert metrics["peak_quality"] == 1.0
    assert metrics["cost_at_95"] == pytest.approx(1.5 / 3.0)


def test_a_model_predicted_nan_is_never_chosen_and_warns_nothing() -> None:
    pred = np.array([[0.2, np.nan], [0.9, np.nan], [0.1, np.nan], [0.3, np.nan]])
    result = evaluate_router(pred, np.array([1.0, 10.0]), TRUE_Q, TRUE_C, MODELS)
    assert {tuple(p) for p in result["curve"]} == {(1.0, 0.25)}


def test_paired_bootstrap_separates_a_real_gap_from_noise() -> None:
    rng = np.random.default_rng(0)
    n = 300
    strong = rng.random(n) < 0.5  # prompts only the strong model answers
    true_q = np.stack([(~strong).astype(float), np.ones(n)], axis=1)
    true_c = np.tile([1.0, 10.0], (n, 1))
    cost = np.array([1.0, 10.0])
    truth = true_q.copy()
    coin = np.stack([rng.random(n), np.full(n, 0.5)], axis=1)
    gap = paired_bootstrap(truth, coin, cost, true_q, true_c, MODELS, n_boot=100)
    assert gap["delta"] > 0 and gap["lo"] > 0 and gap["share_a_ge_b"] == 1.0 and gap["n_boot"] == 100
    same = paired_bootstrap(truth, truth.copy(), cost, true_q, true_c, MODELS, n_boot=50)
    assert same["delta"] == same["lo"] == same["hi"] == 0.0
    flipped = paired_bootstrap(coin, truth, cost, true_q, true_c, MODELS, n_boot=100)
    assert flipped["delta"] == pytest.approx(-gap["delta"]) and flipped["hi"] < 0


def test_paired_bootstrap_can_give_each_router_its_own_cost_prediction() -> None:
    """Two trained routers each decide with their own cost model: with b's costs swapped (it believes the strong
    model is the cheap one) the same quality predictions route worse, and the difference shows it."""
    rng = np.random.default_rng(0)
    n = 300
    strong = rng.random(n) < 0.5
    true_q = np.stack([(~strong).astype(float), np.ones(n)], axis=1)
    true_c = np.tile([1.0, 10.0], (n, 1))
    truth = true_q.copy()
    shared = paired_bootstrap(truth, truth.copy(), np.array([1.0, 10.0]), true_q, true_c, MODELS, n_boot=50)
    own = paired_bootstrap(
        truth, truth.copy(), np.array([1.0, 10.0]), true_q, true_c, MODELS, n_boot=50, pred_c_b=np.array([10.0, 1.0])
    )
    assert shared["delta"] == 0.0
    assert own["delta"] > 0 and own["lo"] > 0

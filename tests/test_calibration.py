"""Calibration maps and presets on seeded synthetic predictions."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from router_fakes import one_blas_thread

from router_models.evaluate.metrics import reference_points, sweep
from router_models.train.calibration import Calibrator, PresetTarget, ece, fit_presets, reliability


@pytest.fixture(autouse=True, scope="module")
def _blas() -> Iterator[None]:
    with one_blas_thread():
        yield


def miscalibrated(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True success probability p; the scorer reports p³ for model 0 and 0.5 + (p − 0.5)/3 for model 1."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, 2))
    scores = (rng.random((n, 2)) < p).astype(float)
    scores[rng.random((n, 2)) < 0.05] = np.nan
    pred = np.stack([p[:, 0] ** 3, 0.5 + (p[:, 1] - 0.5) / 3], axis=1)
    return pred, scores


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_improves_ece_on_held_out_rows_and_keeps_the_order(method: str) -> None:
    pred, scores = miscalibrated()
    fit, held = slice(0, 1000), slice(1000, None)
    cal = Calibrator.fit(pred[fit], scores[fit], method)  # type: ignore[arg-type]
    after = cal.apply(pred[held])
    for j in range(2):
        before_j, after_j = ece(pred[held, j], scores[held, j]), ece(after[:, j], scores[held, j])
        assert before_j > 0.08 and after_j < before_j / 2, (method, j, before_j, after_j)
        order = np.argsort(pred[held, j])
        assert (np.diff(after[order, j]) >= -1e-12).all()  # monotone: never reorders a model's prompts


def test_centred_isotonic_is_strictly_increasing_between_its_knots() -> None:
    pred, scores = miscalibrated()
    cal = Calibrator.fit(pred, scores)
    for x, y in zip(cal.knots_x, cal.knots_y, strict=True):
        assert (np.diff(x) > 0).all() and (np.diff(y) > 0).all()
    grid = np.linspace(cal.knots_x[0][0], cal.knots_x[0][-1], 500)
    out = cal.apply(np.stack([grid, grid], axis=1))[:, 0]
    assert len(np.unique(out)) == len(grid)  # distinct predictions stay distinct: no new ties


def test_calibrator_round_trips_through_arrays_and_skips_models_with_few_results() -> None:
    pred, scores = miscalibrated()
    scores[30:, 1] = np.nan  # model 1: 30 results at most, below min_count
    cal = Calibrator.fit(pred, scores, min_count=50)
    assert cal.methods == ["isotonic", "identity"]
    cal.add_identity()
    params, arrays = cal.to_arrays()
    again = Calibrator.from_arrays(params, arrays)
    x = np.random.default_rng(1).random((50, 3))
    np.testing.assert_array_equal(again.apply(x), cal.apply(x))
    np.testing.assert_array_equal(cal.apply(x)[:, 1:], x[:, 1:])


def test_reliability_bins_count_every_observed_entry() -> None:
    pred, scores = miscalibrated(500)
    bins = reliability(pred, scores, n_bins=5)
    assert sum(b["count"] for b in bins) == int((~np.isnan(scores)).sum())
    assert ece(np.where(np.isnan(scores), 0.3, scores), scores) == 0.0


def routing_val(n: int = 600, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Three models (cheap/mid/strong); predictions are the true probabilities plus noise."""
    rng = np.random.default_rng(seed)
    p = np.clip(np.stack([rng.beta(2, 3, n), rng.beta(3, 2, n), rng.beta(6, 1.5, n)], axis=1), 0, 1)
    true_q = (rng.random(p.shape) < p).astype(float)
    true_c = np.array([1.0, 3.0, 10.0]) * rng.uniform(0.9, 1.1, p.shape)
    pred_q = np.clip(p + rng.normal(0, 0.05, p.shape), 0, 1)
    return pred_q, np.array([1.0, 3.0, 10.0]), true_q, true_c


def test_presets_hit_their_targets_on_val() -> None:
    pred_q, pred_c, true_q, true_c = routing_val()
    models = ("cheap", "mid", "strong")
    targets = {
        "quality": PresetTarget("lambda", 0.0),
        "balanced": PresetTarget("quality_share", 0.95),
        "cheap": PresetTarget("cost_share", 0.30),
        "few_strong": PresetTarget("model_share", 0.2, "strong"),
    }
    presets = fit_presets(pred_q, pred_c, true_q, true_c, models, targets)
    best = reference_points(true_q, true_c, models)["best_single"]
    assert best.model == "strong"
    assert presets["default"]["lambda"] == presets["balanced"]["lambda"]
    assert all(p["met"] for p in presets.values())

    def realized(name: str) -> tuple[float, float, np.ndarray]:
        c = sweep(pred_q, pred_c, true_q, true_c, lambdas=np.array([presets[name]["lambda"]]))
        return float(c.cost[0]), float(c.quality[0]), c.share[0]

    assert presets["quality"]["lambda"] == 0.0
    cost, quality, _ = realized("balanced")
    assert quality >= 0.95 * best.quality and cost < best.cost
    assert (cost, quality) == (presets["balanced"]["val_cost"], presets["balanced"]["val_quality"])
    cost, quality, _ = realized("cheap")
    assert cost <= 0.30 * best.cost
    _, _, share = realized("few_strong")
    assert share[2] <= 0.2
    # "balanced" is the cheapest point meeting its target: every cheaper sweep point misses it.
    full = sweep(pred_q, pred_c, true_q, true_c)
    cheaper = full.cost < presets["balanced"]["val_cost"]
    assert (full.quality[cheaper] < 0.95 * best.quality).all()


def test_an_unreachable_preset_says_so() -> None:
    pred_q, pred_c, true_q, true_c = routing_val()
    presets = fit_presets(
        pred_q, pred_c, true_q, true_c, ("a", "b", "c"), {"impossible": PresetTarget("cost_share", 0.01)}, "impossible"
    )
    assert presets["impossible"]["met"] is False
    with pytest.raises(ValueError, match="not among"):
        fit_presets(
            pred_q, pred_c, true_q, true_c, ("a", "b", "c"), {"x": PresetTarget("model_share", 0.1, "zzz")}, "x"
        )


def test_choose_scores_every_method_by_cross_fitted_auc() -> None:
    from router_models.train.calibration import AUTO_METHODS, Calibrator

    rng = np.random.default_rng(0)
    n = 400
    truth = rng.random((n, 3))
    scores = (rng.random((n, 3)) < truth).astype(float)
    costs = np.tile([1.0, 2.0, 4.0], (n, 1))
    method, table = Calibrator.choose(truth, scores, costs, costs, ("a", "b", "c"))
    assert set(table) == set(AUTO_METHODS) and method in AUTO_METHODS
    assert table[method] == max(table.values())
    assert all(0 < v < 2 for v in table.values())

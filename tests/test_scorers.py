"""Scorers, the cost model and scorer selection on small seeded data with topic structure."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp
from router_fakes import MODELS, OUT_TOKENS, PRICES, fast_candidates, make_routing, one_blas_thread

from router_models.data import RoutingDataset
from router_models.decide.costs import CostModel, ModelPrice, chars_tokens
from router_models.scorers import (
    BlendScorer,
    ClusterScorer,
    KNNScorer,
    ProbeScorer,
    brier,
    column_means,
    holdout_mask,
    mean_cost,
    scorer_from_state,
    scorer_state,
)
from router_models.train.selection import cross_fit, ensemble_counts, fit_router, select_scorer


@pytest.fixture(autouse=True, scope="module")
def _blas() -> Iterator[None]:
    with one_blas_thread():
        yield


@pytest.fixture(scope="module")
def syn():  # type: ignore[no-untyped-def]
    return make_routing(400, seed=1)


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    test = np.arange(n) % 4 == 0
    return ~test, test


def test_topk_probe_keeps_the_informative_features_and_matches_dense_input() -> None:
    rng = np.random.default_rng(0)
    X = np.where(rng.random((500, 200)) < 0.1, rng.gamma(2, 1, (500, 200)), 0.0)
    y = (X[:, 7] + X[:, 42] + rng.normal(0, 0.3, 500) > 0.6).astype(float)
    scores = np.stack([y, 1 - y], axis=1)
    scores[:20, 0] = np.nan  # a missing score is just not a target
    sparse = ProbeScorer(Cs=(1.0,), top_k=(2,)).fit(sp.csr_matrix(X), scores)
    dense = ProbeScorer(Cs=(1.0,), top_k=(2,)).fit(X.astype(np.float32), scores)
    assert sparse.coef is not None and dense.coef is not None
    assert set(np.flatnonzero(sparse.coef[0])) == {7, 42}
    np.testing.assert_allclose(sparse.coef, dense.coef, atol=1e-6)
    np.testing.assert_allclose(sparse.predict_quality(sp.csr_matrix(X)), dense.predict_quality(X), atol=1e-6)


def test_probe_chooses_k_and_C_on_val_and_uses_ridge_for_fractional_scores(syn) -> None:  # type: ignore[no-untyped-def]
    scores = syn.ds.scores.copy()
    scores[:, 2] = np.clip(scores[:, 2] * 0.7 + 0.1, 0, 1)  # fractional
    probe = ProbeScorer(Cs=(0.1, 1.0), top_k=(4, 16, None)).fit(syn.features.sparse, scores, holdout_mask(400))
    assert probe.link == ["logistic", "logistic", "ridge", "logistic"]
    assert set(probe.chosen_k) <= {4, 16, None} and set(probe.chosen_C) <= {0.1, 1.0}
    q = probe.predict_quality(syn.features.sparse)
    assert q.shape == (400, 4) and (q >= 0).all() and (q <= 1).all()


def test_knn_on_sparse_features_matches_dense_input_and_stays_sparse(syn) -> None:  # type: ignore[no-untyped-def]
    X = syn.features.sparse
    a = KNNScorer(ks=(5, 20)).fit(X, syn.ds.scores, holdout_mask(400))
    b = KNNScorer(ks=(5, 20)).fit(X.toarray(), syn.ds.scores, holdout_mask(400))
    assert sp.issparse(a._x) and a._x.nnz == X.nnz and a.k == b.k
    np.testing.assert_allclose(a.predict_quality(X[:50]), b.predict_quality(X[:50].toarray()), atol=1e-6)


def test_cluster_scorer_beats_a_constant_on_clustered_data(syn) -> None:  # type: ignore[no-untyped-def]
    train, test = _split(400)
    val = holdout_mask(int(train.sum()))
    cl = ClusterScorer(ks=(2, 4, 8), temperatures=(0.0, 0.3)).fit(syn.features.dense[train], syn.ds.scores[train], val)
    assert cl.centroids is not None and len(cl.centroids) in (2, 4, 8)
    pred = cl.predict_quality(syn.features.dense[test])
    constant = np.broadcast_to(column_means(syn.ds.scores[train]), pred.shape)
    assert brier(pred, syn.ds.scores[test]) < brier(constant, syn.ds.scores[test]) - 0.03


def test_cluster_profile_falls_back_to_the_global_mean_where_a_model_has_no_results() -> None:
    x = np.repeat(np.eye(2), 50, axis=0) + 0.01
    s = np.stack([np.r_[np.ones(50), np.zeros(50)], np.r_[np.full(50, np.nan), np.ones(50)]], axis=1)
    cl = ClusterScorer(ks=(2,), temperatures=(0.0,), prior=5.0).fit(x, s)
    assert cl.profile is not None
    first = cl.assign(x[:1])[0]
    assert cl.profile[first, 0] == pytest.approx((50 + 5 * 0.5) / 55)  # shrunk toward the global mean 0.5
    assert cl.profile[first, 1] == pytest.approx(1.0)  # no results there: the model's global mean


def test_blend_predicts_the_weighted_mean_of_its_parts_and_rejects_bad_weights(syn) -> None:  # type: ignore[no-untyped-def]
    views = {"sae": syn.features.sparse, "dense": syn.features.dense}
    parts = (ProbeScorer(Cs=(1.0,), top_k=(8,)), KNNScorer(ks=(10,)), ClusterScorer(ks=(4,)))
    blend = BlendScorer(parts, ("sae", "dense", "dense"), (2, 1, 1)).fit(views, syn.ds.scores, holdout_mask(400))
    assert blend.weights == (0.5, 0.25, 0.25)
    a, b, c = (p.predict_quality(views[k]) for p, k in zip(blend.parts, blend.kinds, strict=True))
    np.testing.assert_allclose(blend.predict_quality(views), 0.5 * a + 0.25 * b + 0.25 * c)
    assert BlendScorer(parts[:2], ("sae", "dense")).weights == (0.5, 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        BlendScorer(parts[:2], ("sae", "dense"), (1.0, -1.0))
    with pytest.raises(ValueError, match="one feature kind per part"):
        BlendScorer(parts[:2], ("sae",))


def test_ensemble_selection_adds_only_what_raises_the_objective() -> None:
    target = np.array([1.0, 0.0, 1.0, 0.0])
    preds = {
        "good": np.array([0.9, 0.2, 0.6, 0.4]),
        "other": np.array([0.6, 0.4, 0.9, 0.2]),  # errs where "good" errs least: averaging helps
        "bad": np.array([0.0, 1.0, 0.0, 1.0]),
    }

    def objective(q: np.ndarray) -> float:
        return -float(((q - target) ** 2).mean())

    counts, best = ensemble_counts(preds, objective)
    assert set(counts) == {"good", "other"} and "bad" not in counts
    avg = sum(k * preds[n] for n, k in counts.items()) / sum(counts.values())
    assert best == pytest.approx(objective(avg)) and best > objective(preds["good"])
    alone, score = ensemble_counts({"good": preds["good"], "bad": preds["bad"]}, objective)
    assert alone == {"good": 1} and score == objective(preds["good"])


def test_every_scorer_round_trips_through_plain_arrays(syn) -> None:  # type: ignore[no-untyped-def]
    views = {"sae": syn.features.sparse, "dense": syn.features.dense}
    val = holdout_mask(400)
    fitted = [
        (ProbeScorer(Cs=(1.0,), top_k=(8,)).fit(views["sae"], syn.ds.scores, val), views["sae"]),
        (ClusterScorer(ks=(4,)).fit(views["dense"], syn.ds.scores, val), views["dense"]),
        (KNNScorer(ks=(5,)).fit(views["dense"], syn.ds.scores, val), views["dense"]),
        (KNNScorer(ks=(5,)).fit(views["sae"], syn.ds.scores, val), views["sae"]),
        (
            BlendScorer(
                (ProbeScorer(Cs=(1.0,)), ClusterScorer(ks=(4,)), KNNScorer(ks=(5,))), ("sae", "dense", "sae"), (3, 1, 1)
            ).fit(views, syn.ds.scores),
            views,
        ),
    ]
    for scorer, x in fitted:
        kind, params, arrays = scorer_state(scorer)
        assert all(isinstance(v, np.ndarray) for v in arrays.values())
        again = scorer_from_state(kind, params, arrays)
        np.testing.assert_array_equal(again.predict_quality(x), scorer.predict_quality(x))


def test_select_scorer_cross_fits_every_candidate_and_keeps_the_best_cv_auc(syn) -> None:  # type: ignore[no-untyped-def]
    views = {"sae": syn.features.sparse, "dense": syn.features.dense}
    folds = np.arange(400) % 4
    cost = mean_cost(syn.ds.scores, syn.ds.costs)
    sel = select_scorer(fast_candidates(), views, syn.ds.scores, syn.ds.costs, folds, cost, MODELS)
    assert set(fast_candidates()) <= set(sel.table) <= set(fast_candidates()) | {"ensemble"}
    assert sel.table[sel.name]["cv_auc"] == max(t["cv_auc"] for t in sel.table.values())
    assert sel.oof_quality.shape == (400, 4) and not np.isnan(sel.oof_quality).any()
    assert all(0.5 < t["cv_auc"] <= 1.2 for t in sel.table.values())
    if "ensemble" in sel.table:
        weights = sel.table["ensemble"]["weights"]
        assert len(weights) >= 2 and sum(weights.values()) == pytest.approx(1.0)
    # Out-of-fold: row i's prediction comes from a fit on the other folds only.
    cand = fast_candidates()["knn"]
    oof = cross_fit(cand, views, syn.ds.scores, folds)
    held = folds == 0
    alone = cand.make().fit(views["dense"][~held], syn.ds.scores[~held], holdout_mask(int((~held).sum())))
    np.testing.assert_allclose(oof[held], alone.predict_quality(views["dense"][held]))
    with pytest.raises(ValueError, match="at least 2 folds"):
        select_scorer(fast_candidates(), views, syn.ds.scores, syn.ds.costs, np.zeros(400), cost, MODELS)


def test_selection_never_sees_test_rows(syn) -> None:  # type: ignore[no-untyped-def]
    """fit_router takes train rows only; what the test rows hold cannot change the selection."""
    with pytest.raises(ValueError, match="train rows only"):
        fit_router(syn.features, RoutingDataset(**{**_fields(syn.ds), "splits": _mixed()}))
    train = np.arange(400) < 300
    reports = []
    for seed in (0, 1):  # two datasets identical on train, different on "test"
        scores = syn.ds.scores.copy()
        scores[~train] = np.random.default_rng(seed).random(((~train).sum(), 4)).round()
        ds = RoutingDataset(**{**_fields(syn.ds), "scores": scores}).subset(train)
        feats = type(syn.features)(
            syn.features.sparse[train],
            syn.features.dense[train],
            syn.features.recon_error[train],
            syn.features.n_tokens[train],
        )
        cands = {k: v for k, v in fast_candidates().items() if k in ("dense", "cluster")}
        reports.append(fit_router(feats, ds, prices=PRICES, candidates=cands, ensemble=False)[1])
    assert reports[0]["candidates"].keys() == reports[1]["candidates"].keys()
    for name in reports[0]["candidates"]:
        assert reports[0]["candidates"][name]["cv_auc"] == reports[1]["candidates"][name]["cv_auc"]


def _fields(ds: RoutingDataset) -> dict[str, object]:
    keys = ("name", "prompt_ids", "prompts", "tasks", "splits", "models", "scores", "costs")
    return {k: getattr(ds, k) for k in keys}


def _mixed() -> np.ndarray:
    return np.array(["train" if i % 5 else "test" for i in range(400)], dtype=object)


def test_cost_model_learns_output_tokens_from_prices_and_falls_back_to_mean_cost(syn) -> None:  # type: ignore[no-untyped-def]
    texts = [str(p) for p in syn.ds.prompts]
    prices = {**PRICES, "mid": ModelPrice(), "cheap": ModelPrice(per_call=0.001)}
    cm = CostModel.fit(MODELS, texts, syn.ds.costs, prices)
    assert cm.mode == ["fixed", "tokens", "fixed", "tokens"]
    assert cm.out_tokens[0, 1] == pytest.approx(OUT_TOKENS[1], rel=0.05)
    assert cm.out_tokens[0, 3] == pytest.approx(OUT_TOKENS[3], rel=0.05)
    pred = cm.predict(texts[:3])
    assert pred.shape == (3, 4) and pred[0, 0] == 0.001
    assert pred[0, 2] == pytest.approx(mean_cost(~np.isnan(syn.ds.costs) * 1.0, syn.ds.costs)[2])
    in_tok = chars_tokens(texts[0])
    assert pred[0, 3] == pytest.approx((in_tok * 5.0 + cm.out_tokens[0, 3] * 15.0) / 1e6)
    grouped = CostModel.fit(MODELS, texts, syn.ds.costs, PRICES, groups=np.arange(400) % 2, n_groups=2)
    assert grouped.out_tokens.shape == (2, 4)
    with pytest.raises(ValueError, match="no prices and no training costs"):
        CostModel.fit(("x",), ["a"], np.full((1, 1), np.nan))

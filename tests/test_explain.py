"""Explanations: cited latents are those whose deletion most lowers the served margin, by the reported amount;
and the probe's logit difference decomposes exactly into feature contributions."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from router_fakes import MODELS, PRICES, fast_candidates, featurizer, make_routing, one_blas_thread

from router_models.decide.costs import CostModel
from router_models.decide.engine import PromptScores, cite_by_effect, lambda_interval
from router_models.decide.explain import explain_pair, probe_contributions
from router_models.features.pooling import PromptFeatures
from router_models.features.spec import FeatureSpec
from router_models.router import TrainedRouter
from router_models.scorers import BlendScorer, ProbeScorer
from router_models.train.calibration import Calibrator
from router_models.train.selection import fit_router

LABELS = {
    "latents": {str(i): {"label": f"latent-{i}", "top_tokens": [], "tasks": [], "frequency": 0.1} for i in range(32)}
}


@pytest.fixture(autouse=True, scope="module")
def _blas() -> Iterator[None]:
    with one_blas_thread():
        yield


@pytest.fixture(scope="module")
def fitted() -> tuple[TrainedRouter, list[str]]:
    syn = make_routing(300, seed=2)
    texts = [str(p) for p in syn.ds.prompts]
    spec = FeatureSpec("SmolLM2-135M-Instruct", 512, 64, True, (9,), 9, d_sae=32, d_model=16)
    cands = {k: v for k, v in fast_candidates().items() if k in ("probe", "cluster")}
    router, _ = fit_router(
        syn.features,
        syn.ds,
        spec=spec,
        prices=PRICES,
        labels=LABELS,
        candidates=cands,
        featurize=featurizer(texts, syn.features),
    )
    return router, texts


@pytest.mark.parametrize("sparse", [True, False])
def test_contributions_sum_exactly_to_the_logit_difference(sparse: bool) -> None:
    syn = make_routing(300, seed=3)
    X = syn.features.sparse if sparse else syn.features.dense_sparse()
    probe = ProbeScorer(Cs=(1.0,), top_k=(16,)).fit(X, syn.ds.scores)
    logits = probe.logits(X[:20])
    for i in range(20):
        for chosen, runner in ((3, 0), (1, 2), (0, None)):
            c = probe_contributions(probe, X[i], chosen, runner)
            expected = logits[i, chosen] - (logits[i, runner] if runner is not None else 0.0)
            assert c.logit_difference == pytest.approx(expected, abs=1e-12)
            assert np.allclose(c.values.sum() + c.bias, expected, atol=1e-9, rtol=0)


def test_explain_pair_lists_top_features_that_add_up(fitted: tuple[TrainedRouter, list[str]]) -> None:
    router, texts = fitted
    assert router.probe is not None
    for text in texts[:10]:
        scores = router.score_batch([text])[0]
        d = router.decide(scores, "balanced")
        out = router.explain(scores, d.model, d.ranking[1])
        probe = out["probe"]
        listed = sum(f["contribution"] for f in probe["features"])
        total = listed + probe["other_features"] + probe["bias_difference"]
        assert np.allclose(total, probe["logit_difference"], atol=1e-9, rtol=0)
        i, r = router.models.index(d.model), router.models.index(d.ranking[1])
        logits = router.probe.logits(sp.csr_matrix(scores.features))[0]
        assert probe["logit_difference"] == pytest.approx(logits[i] - logits[r], abs=1e-9)
        for f in probe["features"]:  # pooled index -> (latent, block) -> label
            assert f["latent"] == f["feature"] % 32 and f["pooling"] == ("max", "mean")[f["feature"] // 32]
            assert f["label"] == f"latent-{f['latent']}"
        assert abs(probe["features"][0]["contribution"]) >= abs(probe["features"][-1]["contribution"])


def test_explanation_reports_both_models_margins_and_lambda_range(fitted: tuple[TrainedRouter, list[str]]) -> None:
    router, texts = fitted
    d = router.decide(texts[0], "cheap", explain=True)
    ex = d.explanation
    assert ex is not None
    runner = d.ranking[1]
    assert ex["chosen"] == {"model": d.model, "quality": d.quality[d.model], "cost": d.cost[d.model]}
    assert ex["runner_up"]["model"] == runner
    assert ex["utility_margin"] == pytest.approx(d.utility[d.model] - d.utility[runner])
    assert ex["utility_margin"] >= -1e-12
    lo, hi = ex["pair_lambda_interval"]
    assert lo <= d.lam <= hi and ex["lambda_interval"] == list(d.lambda_interval)
    q, c = np.array(list(d.quality.values())), np.array(list(d.cost.values()))
    assert list(d.lambda_interval) == list(lambda_interval(q, c, router.models.index(d.model), np.ones(4, bool)))
    assert ex["clusters"] and set(ex["clusters"][0]["mean_score"]) == {d.model, runner}


def test_an_ensemble_explains_each_part_and_the_parts_sum_to_the_served_quality(
    fitted: tuple[TrainedRouter, list[str]],
) -> None:
    router, texts = fitted
    assert router.probe is not None and router.clusters is not None
    blend = BlendScorer((copy.deepcopy(router.probe), copy.deepcopy(router.clusters)), ("sae", "dense"), (3, 1))
    identity = Calibrator.identity(4)
    ens = replace(router, scorer=blend, scorer_name="ensemble", scorer_features="all", calibrator=identity)
    d = ens.decide(texts[1], "balanced", explain=True)
    ex = d.explanation
    assert ex is not None and ex["scorer"] == "ensemble" and "SAE probe" in ex["note"]
    parts = {p["part"]: p for p in ex["ensemble"]}
    assert parts["probe"]["features"] == "sae" and parts["probe"]["weight"] == 0.75
    assert parts["cluster"]["features"] == "dense" and parts["cluster"]["weight"] == 0.25
    for model in (d.model, d.ranking[1]):
        mixed = sum(p["weight"] * p["quality"][model] for p in ex["ensemble"])
        assert mixed == pytest.approx(d.quality[model], abs=1e-12)


def test_explain_without_runner_up_or_probe() -> None:
    scores = PromptScores(np.array([0.9, 0.5, 0.4, 0.2]), np.array([1.0, 2.0, 3.0, 4.0]))
    out = explain_pair(MODELS, scores, "cheap", None)
    assert out["runner_up"] is None and "probe" not in out and out["chosen"]["quality"] == 0.9
    with pytest.raises(ValueError, match="unknown model"):
        explain_pair(MODELS, scores, "nope", None)


def _delete(feats: PromptFeatures, latent: int, decoder: np.ndarray, d_sae: int = 32) -> PromptFeatures:
    """``feats`` (one row, blocks [max | mean]) with ``latent`` deleted, written out independently of
    router_models.features.intervene."""
    x = feats.sparse.toarray()
    mean = x[0, d_sae + latent]
    x[0, [latent, d_sae + latent]] = 0.0
    dense = feats.dense - mean * decoder[latent]
    return PromptFeatures(sp.csr_matrix(x), dense, feats.recon_error, feats.n_tokens)


def test_deleting_a_cited_latent_changes_the_served_margin_by_the_reported_amount(
    fitted: tuple[TrainedRouter, list[str]],
) -> None:
    router, texts = fitted
    decoder = np.random.default_rng(0).normal(0, 0.5, (32, 16)).astype(np.float32)
    router = replace(router, decoder=decoder)
    assert router.featurize is not None
    for text in texts[:6]:
        d = router.decide(text, "balanced", explain=True)
        ex = d.explanation
        assert ex is not None and ex["deletion"]["dense_edited"] and ex["deletion"]["screened"] <= 32
        cited = ex["features"]
        assert all(f["delta_utility_margin"] < 0 for f in cited) and len(cited) <= ex["deletion"]["top_n"]
        assert [f["delta_utility_margin"] for f in cited] == sorted(f["delta_utility_margin"] for f in cited)
        i, r = router.models.index(d.model), router.models.index(d.ranking[1])
        for f in cited[:3]:  # re-predict through the full served path, the cost model reading the text
            q, c = router.predict(_delete(router.featurize([text]), f["latent"], decoder), [text])
            after = (q[0, i] - d.lam * c[0, i]) - (q[0, r] - d.lam * c[0, r])
            assert after - ex["utility_margin"] == pytest.approx(f["delta_utility_margin"], abs=1e-9)
            assert q[0, i] - q[0, r] - ex["quality_margin"] == pytest.approx(f["delta_quality_margin"], abs=1e-9)
            assert f["label"] == f"latent-{f['latent']}" and set(f["activation"]) == {"max", "mean"}


class OneLatent:
    """A scorer that reads latent 5's max-pooled activation and nothing else: model "a" gains with it."""

    name = "one_latent"

    def predict_quality(self, X: sp.csr_matrix) -> np.ndarray:
        x = X.toarray()
        return np.stack([0.5 + 0.05 * x[:, 5], np.full(len(x), 0.5)], axis=1)


def test_a_router_reading_one_latent_cites_it_first_and_other_deletions_do_nothing() -> None:
    d_sae = 16
    costs = CostModel(("a", "b"), ["fixed", "fixed"], np.zeros(2), np.zeros(2), np.zeros((1, 2)), np.ones(2))
    router = TrainedRouter(
        models=("a", "b"),
        n_base=2,
        scorer=OneLatent(),
        scorer_name="one_latent",
        scorer_features="sae",
        calibrator=Calibrator.identity(2),
        costs=costs,
        preset_table={"default": {"lambda": 0.0}},
        spec=FeatureSpec("tiny", 128, 32, True, (2,), 2, d_sae=d_sae, d_model=8),
        decoder=np.random.default_rng(1).normal(size=(d_sae, 8)).astype(np.float32),
    )
    x = np.zeros((1, 2 * d_sae), dtype=np.float32)
    for latent, act in ((2, 9.0), (5, 2.0), (9, 4.0), (11, 1.0)):  # latent 5 is not the strongest
        x[0, [latent, d_sae + latent]] = act, act / 3
    feats = PromptFeatures(sp.csr_matrix(x), np.ones((1, 8), np.float32), np.zeros(1), np.array([7]))
    scores = router.scores_from_features(feats, ["t"])[0]
    d = router.decide(scores, "default", explain=True)
    assert d.model == "a" and d.explanation is not None
    cited = d.explanation["features"]
    assert [f["latent"] for f in cited] == [5]
    assert cited[0]["delta_quality_margin"] == pytest.approx(-0.1) and cited[0]["delta_cost_margin"] == 0.0
    q, c, dense_edited = router.rescore(scores, [[], [2], [9], [11], [2, 9, 11]])
    assert np.array_equal(c, np.ones((5, 2)))
    assert dense_edited and np.array_equal(q, np.repeat(q[:1], 5, axis=0)) and np.array_equal(q[0], scores.quality)


def test_cited_latents_are_ranked_by_the_utility_margin_at_the_decisions_lambda() -> None:
    features = [
        {"latent": 1, "delta_quality_margin": -0.10, "delta_cost_margin": -1.0},  # cheaper without it
        {"latent": 2, "delta_quality_margin": -0.05, "delta_cost_margin": 0.0},
        {"latent": 3, "delta_quality_margin": 0.02, "delta_cost_margin": 0.0},  # deleting it helps the choice
    ]
    assert [f["latent"] for f in cite_by_effect(features, 0.0, 8)] == [1, 2]
    at_02 = cite_by_effect(features, 0.2, 8)
    assert [f["latent"] for f in at_02] == [2] and at_02[0]["delta_utility_margin"] == pytest.approx(-0.05)
    assert [f["latent"] for f in cite_by_effect(features, 0.0, 1)] == [1]


def test_the_deletion_benchmark_measures_what_the_explanation_reports(fitted: tuple[TrainedRouter, list[str]]) -> None:
    from benchmarks.deletion import METHODS, _one_prompt, summarize, table

    router, texts = fitted
    router = replace(router, decoder=np.random.default_rng(0).normal(0, 0.5, (32, 16)).astype(np.float32))
    lam = router.presets["balanced"]
    rng = np.random.default_rng(0)
    prompts = [_one_prompt(router, s, lam, [1, 3], 3, rng, True) for s in router.score_batch(texts[:8])]
    for p, text in zip(prompts, texts[:8], strict=True):
        ex = router.decide(text, lam, explain=True).explanation
        assert ex is not None
        first = -ex["features"][0]["delta_utility_margin"] if ex["features"] else 0.0
        assert p["deletions"]["cited@1"]["utility_drop"] == pytest.approx(first, abs=1e-9)
        assert p["screen_all"]["best_drop"] >= first - 1e-9
    summary = summarize(prompts, [1, 3], 200, 0)
    assert {f"{m}@{k}" for m in METHODS for k in (1, 3)} == set(summary)
    lo, hi = summary["cited@1"]["utility_drop_mean"][1:]
    assert lo <= summary["cited@1"]["utility_drop_mean"][0] <= hi
    assert table(summary, [1, 3]).count("\n") == 2 + 2 * len(METHODS)

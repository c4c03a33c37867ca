"""Onboarding a model from a small labelled set changes decisions only where the new model should win."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from router_fakes import PRICES, Synthetic, fast_candidates, make_routing, one_blas_thread, topic_features

from router_models.artifact.load import load_router
from router_models.artifact.save import save_router
from router_models.decide.costs import ModelPrice
from router_models.decide.policy import argmax_utility
from router_models.features.pooling import PromptFeatures
from router_models.router import TrainedRouter
from router_models.train.onboard import onboard
from router_models.train.selection import fit_router

NEW_PRICE = ModelPrice(0.05, 0.05)  # cheaper than every model already served


@pytest.fixture(autouse=True, scope="module")
def _blas() -> Iterator[None]:
    with one_blas_thread():
        yield


@pytest.fixture(scope="module")
def base() -> tuple[TrainedRouter, Synthetic]:
    syn = make_routing(400, seed=6)
    cands = {k: v for k, v in fast_candidates().items() if k in ("dense", "cluster", "probe")}
    router, _ = fit_router(syn.features, syn.ds, prices=PRICES, candidates=cands, ensemble=False)
    return router, syn


def specialist(syn: Synthetic, n: int, seed: int = 11) -> tuple[PromptFeatures, np.ndarray, list[str]]:
    """A new model that is right on 97% of topic-1 prompts and 5% of the others."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 4, n)
    feats = topic_features(topic, syn.centres, syn.projection, rng)
    scores = (rng.random(n) < np.where(topic == 1, 0.97, 0.05)).astype(float)
    scores[rng.random(n) < 0.05] = np.nan
    return feats, scores, [f"new prompt {i} " + "y" * 100 for i in range(n)]


@pytest.mark.parametrize("n", [120, 300])
def test_onboarding_changes_decisions_mostly_on_the_new_models_cluster(
    base: tuple[TrainedRouter, Synthetic], n: int
) -> None:
    router, syn = base
    feats, scores, _ = specialist(syn, n)
    new = onboard(router, "specialist", feats, scores, price=NEW_PRICE)
    assert new.models == (*router.models, "specialist") and new.probe is not None
    # Under 200 results only the cluster profile is fitted; with more a probe row competes on a hold-out.
    probe_fitted = bool(np.isfinite(new.probe.chosen_C[4]))
    assert probe_fitted == (n >= 200)
    assert new.onboarded == {"specialist": "cluster"} or probe_fitted
    assert router.models == new.models[:4] and not router.onboarded  # the original is untouched
    texts = [str(p) for p in syn.ds.prompts]
    q0, c0 = router.predict(syn.features, texts)
    q1, c1 = new.predict(syn.features, texts)
    np.testing.assert_array_equal(q1[:, :4], q0)  # nothing else was retrained
    np.testing.assert_array_equal(c1[:, :4], c0)
    on_topic = syn.topic == 1
    for lam in (router.presets["default"], router.presets["cheap"]):
        before, after = argmax_utility(q0, c0, lam), argmax_utility(q1, c1, lam)
        changed = before != after
        assert (after[changed] == 4).all()  # a decision only changes to the new model
        assert on_topic[changed].mean() >= 0.9  # ...and almost only on its topic
        assert changed[on_topic].mean() >= 0.5  # where it takes over most prompts


def test_onboarded_router_round_trips_and_gets_a_new_version(
    base: tuple[TrainedRouter, Synthetic], tmp_path: Path
) -> None:
    router, syn = base
    feats, scores, texts = specialist(syn, 250)
    costs = np.where(np.isnan(scores), np.nan, 0.05 * (len(texts[0]) / 4 + 80) / 1e6)
    new = onboard(router, "specialist", feats, scores, texts=texts, costs=costs, price=NEW_PRICE)
    assert new.version != router.version
    assert new.costs.out_tokens[0, 4] == pytest.approx(80.0, abs=1.0)
    assert new.report["onboarded"]["specialist"]["n_prompts"] == int((~np.isnan(scores)).sum())
    loaded = load_router(save_router(new, tmp_path / "r"), load_backbone=False)
    assert loaded.models == new.models and loaded.onboarded == new.onboarded and loaded.n_base == 4
    prompts = [str(p) for p in syn.ds.prompts]
    np.testing.assert_array_equal(loaded.predict(syn.features, prompts)[0], new.predict(syn.features, prompts)[0])


def test_onboarding_refuses_what_it_cannot_do(base: tuple[TrainedRouter, Synthetic]) -> None:
    router, syn = base
    feats, scores, _ = specialist(syn, 100)
    with pytest.raises(ValueError, match="already served"):
        onboard(router, "cheap", feats, scores, price=NEW_PRICE)
    with pytest.raises(ValueError, match="at least 20"):
        onboard(router, "x", feats, np.where(np.arange(100) < 90, np.nan, scores), price=NEW_PRICE)
    with pytest.raises(ValueError, match="no prices and no training costs"):
        onboard(router, "x", feats, scores)


def test_a_router_without_clusters_onboards_through_its_probe(base: tuple[TrainedRouter, Synthetic]) -> None:
    _, syn = base
    cands = {k: v for k, v in fast_candidates().items() if k == "probe"}
    router, _ = fit_router(syn.features, syn.ds, prices=PRICES, candidates=cands, ensemble=False)
    assert router.clusters is None and not router.cost_groups
    feats, scores, _ = specialist(syn, 300)
    new = onboard(router, "specialist", feats, scores, price=NEW_PRICE)
    assert new.onboarded == {"specialist": "probe"}
    q, _ = new.predict(syn.features, [str(p) for p in syn.ds.prompts])
    on_topic = syn.topic == 1
    assert q[on_topic, 4].mean() > 0.8 and q[~on_topic, 4].mean() < 0.2

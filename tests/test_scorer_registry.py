"""The scorer registry is the one table of scorer kinds: a toy scorer registered in a test goes end to end
(selection picks it, the router saves, validates, loads and routes with it, the harness offers it), with no
other edit anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_models.artifact.format import ArtifactError
from router_models.artifact.load import load_router
from router_models.artifact.save import save_router
from router_models.evaluate.harness import EvalConfig, evaluate_dataset, harness_routers
from router_models.scorers import BlendScorer, KNNScorer, column_means, scorer_from_state, scorer_state
from router_models.scorers.registry import Preset, ScorerKind, Shapes, get_kind, kinds, register, unregister
from router_models.train.selection import default_candidates, fit_router
from tests.router_fakes import MODELS, PRESET_TARGETS, PRICES, featurizer, make_routing, one_blas_thread


@dataclass
class TopicMean:
    """Toy scorer: the mean score of the training prompts whose dense row's largest coordinate is the same."""

    name: str = "topic_mean"
    table: np.ndarray | None = None  # [d, m]

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> TopicMean:
        key = np.asarray(X).argmax(axis=1)
        self.table = np.stack([column_means(scores[key == k]) for k in range(np.asarray(X).shape[1])])
        return self

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self.table is not None
        return self.table[np.asarray(X).argmax(axis=1)]


def _shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    return {"table": ((d, m), f"{d} features × {m} models")}


TOY = ScorerKind(
    name="topic_mean",
    cls=TopicMean,
    features=("dense",),
    to_state=lambda s: ({"name": s.name}, {"table": s.table}),
    from_state=lambda params, arrays: TopicMean(params["name"], arrays["table"]),
    shapes=_shapes,
    presets=(Preset("topic_mean", "dense", roles=("candidate", "harness"), description="toy: mean per argmax"),),
)


@pytest.fixture
def toy() -> Iterator[ScorerKind]:
    register(TOY)
    try:
        yield TOY
    finally:
        unregister(TOY.name)


def test_toy_scorer_trains_saves_loads_and_routes(toy: ScorerKind, tmp_path: Path) -> None:
    syn = make_routing(200, seed=3)
    texts = [str(p) for p in syn.ds.prompts]
    featurize = featurizer(texts, syn.features)
    candidates = {"topic_mean": default_candidates()["topic_mean"]}  # the registry's preset, nothing else
    with one_blas_thread():
        router, report = fit_router(
            syn.features, syn.ds, candidates=candidates, prices=PRICES, presets=PRESET_TARGETS, featurize=featurize
        )
    assert report["selected"] == "topic_mean" and isinstance(router.scorer, TopicMean)
    path = save_router(router, tmp_path / "router")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["scorer"]["type"] == "topic_mean"
    assert manifest["weights"]["shapes"]["scorer.table"] == [16, len(MODELS)]

    loaded = load_router(path, featurize=featurize)
    assert isinstance(loaded.scorer, TopicMean)
    np.testing.assert_array_equal(loaded.scorer.table, router.scorer.table)
    for text in texts[:20]:
        assert loaded.decide(text, "balanced") == router.decide(text, "balanced")

    # validation reads the toy's declared shapes: a manifest claiming another dense width is refused
    manifest["features"]["n_dense_features"] = 17
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"scorer\.table has shape \(16, 4\) but manifest says 17 features"):
        load_router(path, featurize=featurize)


def test_toy_scorer_is_offered_by_the_harness(toy: ScorerKind) -> None:
    syn = make_routing(200, seed=5)
    ds = replace(syn.ds, splits=np.where(np.arange(200) < 150, "train", "test"))
    assert harness_routers()["topic_mean"].features == "dense"
    report = evaluate_dataset(ds, ["topic_mean"], EvalConfig(progress=False), features={"dense": syn.features.dense})
    assert report["n_test"] == 50 and np.isfinite(report["routers"]["topic_mean"]["auc"])


def test_registry_refuses_duplicates_and_unknown_kinds(toy: ScorerKind) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)
    with pytest.raises(ValueError, match="preset 'knn'"):
        register(ScorerKind("other", KNNScorer, ("dense",), presets=(Preset("knn", "dense"),)))
    with pytest.raises(ValueError, match="reads 'sae'"):
        register(ScorerKind("other", KNNScorer, ("dense",), presets=(Preset("other", "sae"),)))
    with pytest.raises(KeyError, match="unknown scorer type 'nope'"):
        get_kind("nope")
    with pytest.raises(ValueError, match="unknown scorer type 'task_oracle'"):
        scorer_from_state("task_oracle", {}, {})  # a reference, never saved


def test_built_in_kinds_and_their_roles() -> None:
    assert list(kinds()) == ["probe", "knn", "cluster", "blend", "task_oracle", "irt"]
    assert list(default_candidates()) == ["probe", "dense", "knn", "sae_knn", "cluster", "irt", "sae_irt"]
    assert set(harness_routers()) == {"dense", "sae_probe", "knn", "sae_knn", "task_oracle", "irt", "sae_irt"}


def test_a_blend_of_registered_kinds_round_trips_through_its_state() -> None:
    syn = make_routing(120, seed=1)
    views = {"sae": syn.features.sparse, "dense": syn.features.dense}
    blend = BlendScorer((KNNScorer(ks=(5,)), KNNScorer(ks=(5,), name="sae_knn")), ("dense", "sae"), (1.0, 2.0))
    blend.fit(views, syn.ds.scores)
    kind, params, arrays = scorer_state(blend)
    again = scorer_from_state(kind, json.loads(json.dumps(params)), arrays)
    np.testing.assert_array_equal(again.predict_quality(views), blend.predict_quality(views))

"""The router directory: save → load gives identical decisions; tampering and mismatches are named errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from router_fakes import (
    MODELS,
    PRESET_TARGETS,
    PRICES,
    Synthetic,
    fast_candidates,
    featurizer,
    make_routing,
    one_blas_thread,
)

from router_models.artifact.format import ArtifactError
from router_models.artifact.load import BackboneFeaturizer, load_router
from router_models.artifact.save import save_router
from router_models.decide.engine import Constraints, RoutingEngine
from router_models.features.pooling import PromptFeatures
from router_models.features.spec import FeatureSpec
from router_models.router import TrainedRouter
from router_models.train.selection import fit_router

LABELS = {"latents": {"3": {"label": "code", "top_tokens": [], "tasks": [], "frequency": 0.2}}, "dead": []}


@dataclass
class Trained:
    router: TrainedRouter
    report: dict[str, Any]
    path: Path
    texts: list[str]
    featurize: Callable[[Sequence[str]], PromptFeatures]
    syn: Synthetic


@pytest.fixture(autouse=True, scope="module")
def _blas() -> Iterator[None]:
    with one_blas_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("artifact")
    sae_src = root / "sae_src"
    sae_src.mkdir()
    (sae_src / "cfg.json").write_text(json.dumps({"d_sae": 32}))
    spec = FeatureSpec("SmolLM2-135M-Instruct", 512, 64, True, (9,), 9, d_sae=32, d_model=16, sae_dir=sae_src)
    syn = make_routing(300, seed=4)
    texts = [str(p) for p in syn.ds.prompts]
    featurize = featurizer(texts, syn.features)
    router, report = fit_router(
        syn.features,
        syn.ds,
        spec=spec,
        prices=PRICES,
        labels=LABELS,
        candidates=fast_candidates(),
        presets=PRESET_TARGETS,
        featurize=featurize,
    )
    test = make_routing(120, seed=4, split="test")  # same generator state → same topics geometry, new prompts
    router.report["test"] = router.evaluate(test.features, test.ds)
    path = save_router(router, root / "router")
    return Trained(router, report, path, texts, featurize, syn)


def _copy(trained: Trained, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained.path, tmp_path / "copy"))


def _edit_manifest(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_save_then_load_gives_identical_scores_and_decisions(trained: Trained) -> None:
    loaded: RoutingEngine = load_router(trained.path, featurize=trained.featurize)
    assert isinstance(loaded, TrainedRouter)
    assert loaded.version == trained.router.version and len(loaded.version) == 12
    assert loaded.models == MODELS and loaded.presets == trained.router.presets
    assert {"quality", "balanced", "cheap", "default"} <= set(loaded.presets)
    before, after = trained.router.score_batch(trained.texts), loaded.score_batch(trained.texts)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.quality, b.quality)
        np.testing.assert_array_equal(a.cost, b.cost)
        np.testing.assert_array_equal(a.features, b.features)
    lams: list[float | str] = [*loaded.presets, 0.0, 1e-3, 50.0, 1e6]
    cons = [None, Constraints(allowed=("cheap", "mid")), Constraints(max_cost=1e-3)]
    for a, b in zip(before[:60], after[:60], strict=True):
        for lam in lams:
            for c in cons:
                assert loaded.decide(b, lam, c) == trained.router.decide(a, lam, c)
    q1, _ = trained.router.predict(trained.syn.features, trained.texts)
    q2, _ = loaded.predict(trained.syn.features, trained.texts)
    np.testing.assert_array_equal(q1, q2)


def test_directory_is_json_plus_safetensors_and_records_what_was_chosen(trained: Trained) -> None:
    files = sorted(p.name for p in trained.path.iterdir())
    assert files == ["labels.json", "manifest.json", "sae", "weights.safetensors"]
    assert (trained.path / "sae" / "cfg.json").is_file()
    m = json.loads((trained.path / "manifest.json").read_text())
    assert m["format_version"] == 1 and [x["name"] for x in m["models"]] == list(MODELS)
    assert m["models"][3]["price"]["output_per_mtok"] == 15.0
    assert m["features"]["sae"] == {"path": "sae/", "kind": "sae", "d_sae": 32, "fingerprint": ""}
    assert m["features"]["backbone"]["name"] == "SmolLM2-135M-Instruct"
    assert set(fast_candidates()) <= set(m["report"]["candidates"]) <= set(fast_candidates()) | {"ensemble"}
    assert all(isinstance(c["cv_auc"], float) for c in m["report"]["candidates"].values())
    assert m["scorer"]["name"] == m["report"]["selected"]
    assert m["report"]["test"]["auc"] > 0.5 and len(m["report"]["data"]["fingerprint"]) == 64
    assert {"torch", "transformers", "sae-lens", "scikit-learn", "numpy"} <= set(m["versions"])
    assert m["presets"]["default"]["lambda"] == m["presets"]["balanced"]["lambda"]
    assert set(m["weights"]["shapes"]) >= {"probe.coef", "clusters.centroids", "calibration.knots_x", "costs.fixed"}


def test_loading_without_a_backbone(trained: Trained) -> None:
    router = load_router(trained.path, load_backbone=False)
    with pytest.raises(RuntimeError, match="no feature function"):
        router.score_batch(["hello"])
    q, c = router.predict(trained.syn.features, trained.texts)
    assert q.shape == c.shape == (300, 4)
    lazy = load_router(trained.path)  # default: backbone + SAE loaded on first use, not now
    assert isinstance(lazy.featurize, BackboneFeaturizer) and lazy.featurize._loaded is None


def test_tampered_weights_are_refused(trained: Trained, tmp_path: Path) -> None:
    path = _copy(trained, tmp_path)
    raw = bytearray((path / "weights.safetensors").read_bytes())
    raw[-5] ^= 0x01
    (path / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"weights.safetensors: sha256 .* does not match"):
        load_router(path, load_backbone=False)


def test_a_changed_model_list_is_named(trained: Trained, tmp_path: Path) -> None:
    path = _copy(trained, tmp_path)
    _edit_manifest(path, lambda m: m["models"].pop())
    with pytest.raises(ArtifactError, match=r"missing from the manifest: \['strong'\]"):
        load_router(path, load_backbone=False)

    def rename(m: dict[str, Any]) -> None:
        m["models"][3]["name"] = "strong-v2"

    path = Path(shutil.copytree(trained.path, tmp_path / "renamed"))
    _edit_manifest(path, rename)
    with pytest.raises(
        ArtifactError, match=r"missing from the manifest: \['strong'\]; not in the weights: \['strong-v2'\]"
    ):
        load_router(path, load_backbone=False)


def test_a_changed_sae_width_is_named(trained: Trained, tmp_path: Path) -> None:
    path = _copy(trained, tmp_path)

    def width(m: dict[str, Any]) -> None:
        m["features"]["sae"]["d_sae"] = 48

    _edit_manifest(path, width)
    with pytest.raises(ArtifactError, match=r"d_sae=48 × 2 poolings = 96 features, but n_sae_features is 64"):
        load_router(path, load_backbone=False)

    def both(m: dict[str, Any]) -> None:
        m["features"]["sae"]["d_sae"], m["features"]["n_sae_features"] = 48, 96

    _edit_manifest(path, both)
    with pytest.raises(ArtifactError, match=r"\.coef has shape \(4, 64\) but manifest says 4 models × 96 features"):
        load_router(path, load_backbone=False)


def test_other_bad_directories(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_router(tmp_path, load_backbone=False)
    path = _copy(trained, tmp_path)

    def future(m: dict[str, Any]) -> None:
        m["format_version"] = 99

    _edit_manifest(path, future)
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_router(path, load_backbone=False)
    with pytest.raises(FileExistsError):
        save_router(trained.router, path)
    shutil.rmtree(path / "sae")
    _edit_manifest(path, lambda m: m.update(format_version=1))
    with pytest.raises(ArtifactError, match="no sae/ folder"):
        load_router(path)


def test_verify_passes_on_its_own_record_and_names_drift(trained: Trained, tmp_path: Path) -> None:
    from router_models.evaluate.verify import Tolerance, record_check, verify_router

    path = _copy(trained, tmp_path)
    router = load_router(path, featurize=trained.featurize)
    with pytest.raises(ArtifactError, match="no recorded check"):
        verify_router(router, path)
    record_check(router, path, trained.texts[:20])
    same = verify_router(router, path)
    assert same.ok and same.max_quality_diff < 1e-6 and same.flipped == 0  # recorded to 6 decimals
    assert same.decisions == 20 * len(router.presets)

    check = json.loads((path / "check.json").read_text())
    check["quality"] = (np.asarray(check["quality"]) + 0.05).tolist()  # as if features had moved
    (path / "check.json").write_text(json.dumps(check))
    drifted = verify_router(router, path)
    assert not drifted.ok and drifted.max_quality_diff == pytest.approx(0.05, abs=1e-5)
    assert verify_router(router, path, Tolerance(quality=0.1)).ok

    name = next(iter(check["decisions"]))
    check["decisions"][name] = ["not-a-model"] * 20
    (path / "check.json").write_text(json.dumps(check))
    assert verify_router(router, path, Tolerance(quality=0.1)).flipped == 20

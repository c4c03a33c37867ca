"""Prompt features: our pooled SAE latents equal sae-lens ``encode`` on the same activations; the cache and
the encoder loaders round-trip exactly; feature labels name latents. Tiny seeded backbone and SAEs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from router_models.assets import cache_root
from router_models.features.backbone import Backbone, BackboneConfig
from router_models.features.cache import FeatureCache
from router_models.features.encoder import make_encoder
from router_models.features.labels import label_features
from router_models.features.pooling import extract_features

PROMPTS = [
    "Write a haiku about network routers.",
    "What is 17 * 23? Show your work.",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Translate 'good morning' into French.",
]
LAYER = 2
NUL_ENDING = "prompt 33"  # its sha256 digest ends in 0x00


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = cache_root() / "backbones" / "SmolLM2-135M-Instruct"
    if not (folder / "config.json").exists():
        pytest.skip("SmolLM2 tokenizer not cached (python -m router_models.assets)")
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    hf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
    )
    return Backbone.from_model(LlamaForCausalLM(hf), tok, BackboneConfig(name="tiny", batch_size=3))


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sae_lens import TopKSAE, TopKSAEConfig

    from router_models.features.sae import save_sae

    torch.manual_seed(1)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("sae")
    save_sae(sae, path)
    (path / "sae_router.json").write_text(json.dumps({"layer": LAYER, "backbone": {"name": "tiny"}}))
    return path


def test_pooled_latents_equal_sae_lens_encode(backbone: Backbone, sae_dir: Path) -> None:
    from router_models.features.sae import load_sae

    encoder = make_encoder(sae_dir)
    feats = extract_features(backbone, encoder, PROMPTS)
    sae = load_sae(sae_dir)
    for i, text in enumerate(PROMPTS):
        states = backbone.hidden_states([text], [LAYER])
        acts = states.acts[0, 0][states.content_mask[0].bool()]  # [tokens, d]
        latents = sae.encode(acts).detach()
        want = torch.cat([latents.max(0).values, latents.mean(0)]).numpy()
        np.testing.assert_allclose(feats.sparse[i].toarray()[0], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feats.dense[i], acts.mean(0).numpy(), rtol=1e-5, atol=1e-6)
        assert feats.n_tokens[i] == acts.shape[0]
        recon = sae.decode(latents)
        err = (((recon - acts) ** 2).sum(-1) / (acts**2).sum(-1)).mean().item()
        assert feats.recon_error[i] == pytest.approx(err, rel=1e-4)


def test_feature_cache_round_trip(backbone: Backbone, sae_dir: Path, tmp_path: Path) -> None:
    encoder = make_encoder(sae_dir)
    calls: list[int] = []

    def compute(texts: list[str]):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return extract_features(backbone, encoder, texts)

    cache = FeatureCache(tmp_path, ["tiny", encoder.fingerprint])
    first = cache.get_or_compute(PROMPTS[:3], compute)
    again = cache.get_or_compute(list(reversed(PROMPTS)), compute)  # only the new prompt is computed
    assert calls == [3, 1]
    np.testing.assert_array_equal(again.sparse.toarray()[::-1][:3], first.sparse.toarray())
    np.testing.assert_array_equal(again.dense[::-1][:3], first.dense)
    # A fresh cache object reads both shards from disk; repeated and interleaved texts come back in order.
    mixed = [PROMPTS[3], PROMPTS[0], PROMPTS[3], PROMPTS[2]]
    disk = FeatureCache(tmp_path, ["tiny", encoder.fingerprint]).get_or_compute(mixed, compute)
    assert calls == [3, 1]
    direct = extract_features(backbone, encoder, mixed)
    np.testing.assert_allclose(disk.sparse.toarray(), direct.sparse.toarray(), atol=1e-5)
    np.testing.assert_allclose(disk.dense, direct.dense, atol=1e-5)
    np.testing.assert_array_equal(disk.n_tokens, direct.n_tokens)


def test_feature_cache_finds_a_text_whose_digest_ends_in_a_nul_byte(tmp_path: Path) -> None:
    import hashlib

    import scipy.sparse as sp

    from router_models.features.pooling import PromptFeatures

    texts = ["prompt 0", NUL_ENDING]
    assert hashlib.sha256(NUL_ENDING.encode()).digest()[-1] == 0
    calls: list[list[str]] = []

    def compute(batch: list[str]) -> PromptFeatures:
        calls.append(batch)
        rows = np.array([[len(t), 1.0] for t in batch], dtype=np.float32)
        return PromptFeatures(sp.csr_matrix(rows), rows.copy(), np.zeros(len(batch), np.float32), np.ones(len(batch)))

    FeatureCache(tmp_path, ["k"]).get_or_compute(texts, compute)
    again = FeatureCache(tmp_path, ["k"]).get_or_compute(texts[::-1], compute)
    assert calls == [texts]  # the second call is served from disk, the NUL-ending digest included
    np.testing.assert_array_equal(again.dense[:, 0], [len(NUL_ENDING), len("prompt 0")])


def test_routesae_encoder_loads_and_extracts(backbone: Backbone, tmp_path: Path) -> None:
    from router_models.features.routesae import RouteSAEConfig, build_routesae, save_routesae

    model = build_routesae(RouteSAEConfig(d_in=32, layers=[0, 1, 2], d_sae=64, k=4)).eval()
    from router_models.features.sae import to_inference_sae

    model.sae = to_inference_sae(model.sae)
    save_routesae(model, tmp_path / "r")
    encoder = make_encoder(tmp_path / "r")
    assert encoder.kind == "routesae" and encoder.layers == (0, 1, 2) and encoder.reference_layer == 1
    feats = extract_features(backbone, encoder, PROMPTS)
    assert feats.sparse.shape == (4, 128) and feats.sparse.nnz > 0
    assert np.all(feats.recon_error >= 0)


def test_labels_name_latents_with_tokens_and_tasks(backbone: Backbone, sae_dir: Path) -> None:
    labels = label_features(backbone, make_encoder(sae_dir), PROMPTS, ["poem", "math", "code", "translate"])
    assert labels["n_prompts"] == 4 and labels["latents"]
    one = next(iter(labels["latents"].values()))
    assert one["label"] and one["top_tokens"] and "[[" in one["top_tokens"][0]["context"]
    assert {t["task"] for t in one["tasks"]} <= {"poem", "math", "code", "translate"}
    assert len(labels["latents"]) + len(labels["dead"]) == 64

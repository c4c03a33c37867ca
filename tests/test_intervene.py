"""Deleting SAE latents (router_models.features.intervene): the dense edit equals recomputing the dense row from
the hidden states with the latent's decoder contribution removed, on a tiny seeded backbone and TopK SAE.

Run: ``.venv/bin/pytest -q tests/test_intervene.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from router_models.assets import cache_root
from router_models.features.backbone import Backbone, BackboneConfig
from router_models.features.encoder import SAEEncoder, make_encoder
from router_models.features.intervene import active_latents, decoder_directions, delete_latents
from router_models.features.pooling import extract_features
from router_models.features.sae_inference import TopKSAE, TopKSAEConfig

PROMPTS = ["What is 17 * 23? Show your work.", "Write a haiku about network routers.", "def f(x): return x + 1"]
LAYER, D_SAE = 2, 64


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
    return Backbone.from_model(LlamaForCausalLM(hf), tok, BackboneConfig(name="tiny", batch_size=2))


def _encoder(rescale: bool) -> SAEEncoder:
    torch.manual_seed(3)
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=D_SAE, k=6, rescale_acts_by_decoder_norm=rescale))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    return SAEEncoder(sae.eval(), [LAYER], "sae", LAYER, "test")


@pytest.mark.parametrize("rescale", [True, False])
def test_dense_edit_equals_recomputing_from_hidden_states(backbone: Backbone, rescale: bool) -> None:
    encoder = _encoder(rescale)
    sae = encoder.module
    feats = extract_features(backbone, encoder, PROMPTS)
    directions = decoder_directions(encoder)
    assert directions is not None
    for i, text in enumerate(PROMPTS):
        row = feats.sparse[i].toarray()[0]
        active = active_latents(row, D_SAE)
        deletions = [[], [int(active[0])], [int(k) for k in active[1:4]]]
        views = delete_latents(row, feats.dense[i], deletions, D_SAE, ("max", "mean"), directions)
        states = backbone.hidden_states([text], [LAYER])
        acts = states.acts[0, 0][states.content_mask[0].bool()].float()  # [tokens, d_model]
        z = sae.encode(acts)  # [tokens, d_sae]
        w = sae.W_dec.detach() / (sae.W_dec.detach().norm(dim=-1, keepdim=True) if rescale else 1.0)
        for b, ids in enumerate(deletions):
            edited = acts - z[:, ids] @ w[ids]  # each token's state without the latents' decoder contribution
            np.testing.assert_allclose(views["dense"][b], edited.mean(0).numpy(), rtol=1e-5, atol=1e-5)
            sae_row = views["sae"][b].toarray()[0]
            kept = np.setdiff1d(np.arange(D_SAE), ids)
            assert not sae_row[ids].any() and not sae_row[np.array(ids, dtype=int) + D_SAE].any()
            np.testing.assert_array_equal(sae_row[kept], row[kept])
            np.testing.assert_array_equal(sae_row[kept + D_SAE], row[kept + D_SAE])


def test_no_dense_edit_where_the_dense_row_is_not_the_decoders_target() -> None:
    routed = SimpleNamespace(kind="routesae", layers=(1, 2, 3), reference_layer=2)
    other_layer = SimpleNamespace(kind="sae", layers=(1,), reference_layer=2)
    assert decoder_directions(routed) is None and decoder_directions(other_layer) is None
    row, dense = np.arange(8, dtype=np.float32), np.ones(3, dtype=np.float32)
    views = delete_latents(row, dense, [[1]], 4, ("max", "mean"), None)
    np.testing.assert_array_equal(views["dense"][0], dense)
    np.testing.assert_array_equal(views["sae"].toarray()[0], [0, 0, 2, 3, 4, 0, 6, 7])
    with pytest.raises(ValueError, match="mean pooling"):
        delete_latents(row[:4], dense, [[1]], 4, ("max",), np.ones((4, 3), dtype=np.float32))


DEFAULT_SAE = Path(__file__).resolve().parents[1] / "artifacts" / "default-router" / "sae"


@pytest.mark.skipif(not (DEFAULT_SAE / "cfg.json").is_file(), reason="no bundled default router")
def test_the_default_routers_sae_edits_its_dense_row_along_unit_decoder_rows() -> None:
    """The SAE's one layer is the dense row's layer, and rescale_acts_by_decoder_norm makes the decoder direction
    of latent i W_dec[i] / ‖W_dec[i]‖."""
    encoder = make_encoder(DEFAULT_SAE)
    assert encoder.kind == "sae" and len(encoder.layers) == 1 and tuple(encoder.layers) == (encoder.reference_layer,)
    assert encoder.module.cfg.rescale_acts_by_decoder_norm
    directions = decoder_directions(encoder)
    assert directions is not None
    w = encoder.module.W_dec.detach().numpy()
    # decode(e_i) − decode(0) adds then subtracts b_dec in float32: a few 1e-6 of cancellation error
    np.testing.assert_allclose(directions, w / np.linalg.norm(w, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)

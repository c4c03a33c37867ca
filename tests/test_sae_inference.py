"""router_models.features.sae_inference reads a saved TopK SAE without sae-lens and encodes bit-identically to sae-lens.

Run: ``.venv/bin/pytest -q tests/test_sae_inference.py`` (tiny seeded SAEs, plus the bundled router's SAE).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from router_models.features.encoder import _weights_fingerprint
from router_models.features.sae_inference import TopKSAE, load_inference_sae

D_IN, D_SAE, K = 16, 64, 4
DEFAULT_SAE = Path(__file__).resolve().parents[1] / "artifacts" / "default-router" / "sae"


def _saved_sae_lens_topk(folder: Path, rescale: bool, seed: int = 0) -> torch.nn.Module:
    """A sae-lens TopKSAE with random non-trivial weights (all four tensors), saved to ``folder``."""
    from sae_lens import TopKSAE as LensTopKSAE
    from sae_lens import TopKSAEConfig

    torch.manual_seed(seed)
    sae = LensTopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=rescale))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
    sae.save_model(folder)
    return sae.eval()


@pytest.mark.parametrize("rescale", [True, False])
def test_encode_decode_and_fingerprint_equal_sae_lens(tmp_path: Path, rescale: bool) -> None:
    reference = _saved_sae_lens_topk(tmp_path, rescale)
    ours = load_inference_sae(tmp_path)
    assert isinstance(ours, TopKSAE)
    x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(1)) * 5
    with torch.no_grad():
        latents = ours.encode(x)
        assert torch.equal(latents, reference.encode(x))
        assert torch.equal(ours.decode(latents), reference.decode(latents))
    assert int((latents > 0).sum(dim=-1).max()) <= K
    assert _weights_fingerprint(ours) == _weights_fingerprint(reference)  # feature caches stay valid


@pytest.mark.parametrize("rescale", [True, False])
def test_encode_decode_reads_only_active_rows_and_matches_the_dense_pair(tmp_path: Path, rescale: bool) -> None:
    """The request path's one-pass (latents, reconstruction) equals encode then the dense decode up to float
    rounding (it runs in numpy); top-k values ReLU'd to 0 reconstruct nothing."""
    _saved_sae_lens_topk(tmp_path, rescale)
    sae = load_inference_sae(tmp_path)
    x = torch.randn(3, 50, D_IN, generator=torch.Generator().manual_seed(2)) * 5  # batched leading dims too
    latents, recon = sae.encode_decode(x)
    assert latents.shape == (3, 50, D_SAE) and recon.shape == x.shape and latents.dtype == recon.dtype == torch.float32
    dense = sae.encode(x)
    assert torch.equal(latents > 0, dense > 0)  # the same active latents (no ties in random data)
    torch.testing.assert_close(latents, dense, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(recon, sae.decode(latents), rtol=1e-5, atol=1e-4)
    wide = copy.deepcopy(sae).double()  # not CPU float32: the torch path, same answer
    wide_latents, wide_recon = wide.encode_decode(x.double())
    torch.testing.assert_close(wide_latents.float(), dense, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(wide_recon.float(), recon, rtol=1e-5, atol=1e-4)
    empty_latents, empty_recon = sae.encode_decode(x[0, :0])  # a prompt with no content tokens
    assert empty_latents.shape == (0, D_SAE) and empty_recon.shape == (0, D_IN)
    with torch.no_grad():  # every pre-activation negative: the top k are ReLU'd to 0, nothing is reconstructed
        sae.b_enc.sub_(1e4)
    zeros, bias_only = sae.encode_decode(x)
    assert not zeros.any()
    torch.testing.assert_close(bias_only, sae.b_dec.detach().expand_as(bias_only))
    with torch.no_grad():
        sae.b_enc.add_(1e4)
    with torch.no_grad():  # a changed decoder is seen (the cached norms follow W_dec's version)
        sae.W_dec.mul_(2.0)
    latents2, recon2 = sae.encode_decode(x)
    torch.testing.assert_close(recon2, sae.decode(latents2), rtol=1e-5, atol=1e-4)
    if rescale:
        assert not torch.equal(latents2, latents)


@pytest.mark.skipif(not (DEFAULT_SAE / "cfg.json").is_file(), reason="no bundled default router")
def test_default_router_sae_encodes_as_with_sae_lens() -> None:
    from router_models.features.sae import load_sae

    ours, reference = load_inference_sae(DEFAULT_SAE), load_sae(DEFAULT_SAE)
    assert isinstance(ours, TopKSAE)
    x = torch.randn(64, ours.cfg.d_in, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        assert torch.equal(ours.encode(x), reference.encode(x))
    assert _weights_fingerprint(ours) == _weights_fingerprint(reference)


def test_other_architectures_go_to_sae_lens(tmp_path: Path) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "standard"
    loaded = load_inference_sae(tmp_path)
    assert isinstance(loaded, StandardSAE)


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    _saved_sae_lens_topk(tmp_path, rescale=True)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "d_sae": D_SAE * 2}))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_inference_sae(tmp_path)

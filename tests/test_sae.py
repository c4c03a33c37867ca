"""Tests for router_models.sae: TopK SAE training through sae-lens, folding, save/load, metrics.

Run: ``.venv/bin/pytest -q tests/test_sae.py`` (tiny seeded synthetic data; a few seconds after the
sae-lens import).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from router_fakes import one_torch_thread

from router_models.features.sae import (
    SAETrainConfig,
    downstream_kl,
    evaluate_sae,
    iter_batches,
    load_pretrained,
    load_sae,
    lr_lambda,
    save_sae,
    to_inference_sae,
    train_topk_sae,
)

D_IN, D_SAE, K = 16, 64, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def sparse_data(n: int = 4096, scale: float = 40.0, seed: int = 0) -> torch.Tensor:
    """``[n, D_IN]``: 3-sparse combinations of 32 fixed unit atoms, times ``scale``, plus an offset."""
    atoms = torch.nn.functional.normalize(torch.randn(32, D_IN, generator=torch.Generator().manual_seed(0)), dim=-1)
    gen = torch.Generator().manual_seed(seed + 1)
    codes = torch.zeros(n, 32).scatter_(1, torch.randint(0, 32, (n, 3), generator=gen), 1.0)
    codes *= torch.rand(n, 32, generator=gen) + 0.5
    return scale * (codes @ atoms) + scale * 0.3


def small_cfg(**kw: Any) -> SAETrainConfig:
    base: dict[str, Any] = {"d_in": D_IN, "d_sae": D_SAE, "k": K, "batch_size": 256, "total_steps": 150, "lr": 5e-3}
    return SAETrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def trained() -> tuple[Any, dict[str, Any], torch.Tensor]:
    acts = sparse_data()
    sae, log = train_topk_sae(acts, small_cfg(), progress=False)
    return sae, log, acts


def perfect_sae() -> Any:
    """A TopKSAE that reconstructs exactly: latents [x⁺, x⁻], decoder [I; −I], k = d_in."""
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=4, rescale_acts_by_decoder_norm=False))
    eye = torch.eye(4)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_lr_lambda_warms_up_holds_and_decays() -> None:
    values = [lr_lambda(s, 100) for s in range(100)]
    assert values[0] == pytest.approx(0.2) and values[4] == 1.0  # 5 warm-up steps
    assert all(v == 1.0 for v in values[5:80])  # 75% constant
    assert values[80] == 1.0 and values[99] == pytest.approx(1 / 20)  # 20% linear decay
    assert values == sorted(values[:5]) + values[5:]


def test_iter_batches_cycles_a_tensor_and_passes_an_iterable_through() -> None:
    acts = torch.arange(10.0).unsqueeze(1)
    batches = list(iter_batches(acts, batch_size=4, n_steps=5))
    assert len(batches) == 5 and all(b.shape == (4, 1) for b in batches)
    assert torch.cat(batches[:2]).unique().numel() == 8  # within an epoch, no token repeats
    assert torch.equal(torch.cat(list(iter_batches(acts, 4, 5))), torch.cat(batches))  # seeded
    assert len(list(iter_batches([acts, acts], batch_size=4, n_steps=5))) == 2  # an iterable, as given


def test_training_returns_inference_topk_sae_that_reconstructs_raw_acts(trained: Any) -> None:
    from sae_lens import TopKSAE

    sae, log, acts = trained
    assert isinstance(sae, TopKSAE) and sae.cfg.normalize_activations == "none"
    assert sum(log["mse_loss"][-10:]) < sum(log["mse_loss"][:10])
    assert log["steps"] == 150 and log["n_tokens"] == 150 * 256 and len(log["lr"]) == 150
    assert log["scaling_factor"] == pytest.approx((D_IN / acts.pow(2).sum(-1).mean()).sqrt().item(), rel=1e-4)
    metrics = evaluate_sae(sae, sparse_data(seed=1))  # held-out raw activations, norm ≈ 40
    assert metrics["nmse"] < 0.3 and metrics["l0"] == K
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-5)


def test_folding_matches_the_training_sae_on_scaled_input() -> None:
    """Parity: inference SAE on raw x == sae-lens training SAE on s·x, unscaled (latents / s, x̂ / s)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    train_sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    with torch.no_grad():  # decoder norms away from 1 and non-zero biases, so every fold matters
        train_sae.W_dec.mul_(torch.rand(D_SAE, 1) * 3 + 0.2)
        train_sae.b_enc.normal_()
        train_sae.b_dec.normal_()
    x, s = sparse_data(n=256), 0.05
    inference = to_inference_sae(train_sae, scaling_factor=s)
    with torch.no_grad():
        expected_latents = train_sae.encode(x * s) / s
        expected_recon = train_sae.decode(train_sae.encode(x * s)) / s
        latents = inference.encode(x)
        assert torch.equal(latents != 0, expected_latents != 0)
        assert torch.allclose(latents, expected_latents, rtol=1e-4, atol=1e-4)
        assert torch.allclose(inference.decode(latents), expected_recon, rtol=1e-4, atol=1e-3)


def test_encode_matches_sae_lens_loaded_sae_and_the_topk_formula(trained: Any, tmp_path: Any) -> None:
    from sae_lens import SAE

    sae, _, acts = trained
    x = acts[:128]
    reference = SAE.load_from_disk(save_sae(sae, tmp_path / "sae"))  # sae-lens's own loader
    with torch.no_grad():
        latents = sae.encode(x)
        assert torch.equal(latents, reference.encode(x))
        pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc) * sae.W_dec.norm(dim=-1)  # Gao eq. 3 (+ rescale)
        top = pre.topk(K, dim=-1)
        by_hand = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        assert torch.allclose(latents, by_hand, atol=1e-5)


def test_save_load_roundtrip_gives_identical_latents(trained: Any, tmp_path: Any) -> None:
    from sae_lens import TopKSAE

    sae, _, acts = trained
    loaded = load_sae(save_sae(sae, tmp_path / "sae"))
    assert isinstance(loaded, TopKSAE)
    with torch.no_grad():
        assert torch.equal(loaded.encode(acts[:64]), sae.encode(acts[:64]))


def test_training_sae_is_saved_as_its_inference_sae(tmp_path: Any) -> None:
    from sae_lens import TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(0)
    train_sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    loaded = load_sae(save_sae(train_sae, tmp_path / "sae"))
    assert isinstance(loaded, TopKSAE)
    x = sparse_data(n=64)
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x), train_sae.encode(x), atol=1e-5)


def test_load_pretrained_reads_a_local_sae_lens_folder(tmp_path: Any) -> None:
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    sae.save_model(tmp_path / "layer_3")
    loaded = load_pretrained(str(tmp_path), "layer_3")
    x = sparse_data(n=32)
    assert isinstance(loaded, TopKSAE)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))


def test_evaluate_sae_hand_cases() -> None:
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    perfect = evaluate_sae(perfect_sae(), x)
    assert perfect == {"nmse": 0.0, "explained_variance": 1.0, "l0": 4.0, "dead_fraction": 0.0}
    mean_only = perfect_sae()  # decoder off, bias = data mean: x̂ = x̄ explains no variance
    with torch.no_grad():
        mean_only.W_dec.zero_()
        mean_only.b_dec.copy_(x.mean(0))
    assert evaluate_sae(mean_only, x)["nmse"] == pytest.approx(1.0)
    assert evaluate_sae(mean_only, x)["explained_variance"] == pytest.approx(0.0, abs=1e-6)


def test_aux_loss_runs_on_dead_latents() -> None:
    cfg = small_cfg(d_sae=256, total_steps=40, dead_tokens=256, aux_k_coef=1 / 32)
    _, log = train_topk_sae(sparse_data(), cfg, progress=False)
    assert any(a > 0 for a in log["aux_loss"])
    assert all(torch.isfinite(torch.tensor(log["loss"])))


def test_trains_from_an_iterable_of_batches() -> None:
    acts = sparse_data()
    sae, log = train_topk_sae(iter(acts.split(256)), small_cfg(total_steps=None, n_tokens=8 * 256), progress=False)
    assert log["steps"] == 8 and sae.cfg.d_sae == D_SAE
    with pytest.raises(ValueError, match="total_steps or n_tokens"):
        train_topk_sae(iter(acts.split(256)), small_cfg(total_steps=None), progress=False)


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[Any, Any]:
    """A seeded 2-layer LlamaForCausalLM (hidden 32, vocab 100) and a word-level tokenizer, no hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "rug", "and", "quickly"]
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}, "[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=100,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


TEXTS = ["the cat sat on the mat", "a dog ran quickly under the rug and the cat sat"]


def test_downstream_kl_is_zero_for_identity_and_positive_for_zero_ablation(tiny_llama: Any) -> None:
    model, tokenizer = tiny_llama
    assert downstream_kl(model, tokenizer, lambda h: h, 0, TEXTS) == pytest.approx(0.0, abs=1e-7)
    assert downstream_kl(model, tokenizer, torch.zeros_like, 0, TEXTS) > 1e-4
    torch.manual_seed(0)
    from sae_lens import TopKSAE, TopKSAEConfig

    random_sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    assert downstream_kl(model, tokenizer, random_sae, 1, TEXTS, max_tokens=4) > 0.0


def test_downstream_kl_splices_block_output_and_removes_its_hook(tiny_llama: Any) -> None:
    """Layer ℓ = output of decoder block ℓ = HF hidden_states[ℓ + 1]; the model is unchanged after."""
    model, tokenizer = tiny_llama
    seen: list[torch.Tensor] = []

    def record(h: torch.Tensor) -> torch.Tensor:
        seen.append(h.clone())
        return h

    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids, output_hidden_states=True)
        downstream_kl(model, tokenizer, record, 0, TEXTS[:1])
        after = model(input_ids=ids).logits
    assert torch.allclose(seen[0], before.hidden_states[1])
    assert torch.equal(after, before.logits)

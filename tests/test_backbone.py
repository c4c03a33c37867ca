"""Tests for router_models.backbone: truncated-forward parity, early stopping, prompt layout, pooling.

Fast tests wrap tiny seeded random Llama/BERT models around the real (cached) SmolLM2 and MiniLM
tokenizers; ``slow`` tests load the real packaged backbones; the ``gpu`` test needs CUDA.
Run: ``pytest tests/test_backbone.py`` (add ``-m slow`` for the real models).
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from router_models.assets import cache_root
from router_models.features.backbone import Backbone, BackboneConfig, pool_tokens
from router_models.features.onnx_runtime import onnx_available

SMOL = "SmolLM2-135M-Instruct"
MINILM = "all-MiniLM-L6-v2"
PROMPTS = [
    "Write a haiku about network routers.",
    "Prove that the square root of two is irrational, then explain the proof to a child. " * 3,
    "hi",
    "Translate 'good morning' into French, German and Japanese.",
    "Summarise the plot of Hamlet in three sentences.",
]


def _cached(name: str) -> Path:
    folder = cache_root() / "backbones" / name
    if not (folder / "config.json").exists():
        pytest.skip(f"packaged backbone {name} is not cached (run python -m router_models.assets)")
    return folder


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_cached(SMOL))


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_cached(MINILM))


def _tiny_llama(tokenizer, **config) -> Backbone:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # large enough that layers differ well beyond the test tolerance
        pad_token_id=tokenizer.pad_token_id,
    )
    return Backbone.from_model(LlamaForCausalLM(hf), tokenizer, BackboneConfig(name="tiny-llama", **config))


def _tiny_bert(tokenizer, **config) -> Backbone:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    hf = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    return Backbone.from_model(BertModel(hf), tokenizer, BackboneConfig(name="tiny-bert", **config))


@pytest.fixture(scope="module")
def llama(smol_tokenizer) -> Backbone:
    return _tiny_llama(smol_tokenizer)


@pytest.fixture(scope="module")
def bert(minilm_tokenizer) -> Backbone:
    return _tiny_bert(minilm_tokenizer)


@pytest.fixture(params=["llama", "bert"])
def tiny(request) -> Backbone:
    return request.getfixturevalue(request.param)


# ------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("layers", [(0,), (1,), (0, 2), (-1,), (3, 1, 0), (0, 1, 2, 3)])
def test_truncated_forward_matches_full_forward(tiny: Backbone, layers: tuple[int, ...]) -> None:
    ours = tiny.hidden_states(PROMPTS, layers)
    ref = tiny.full_hidden_states(PROMPTS, layers)
    assert ours.layers == ref.layers == tuple(layer % 4 for layer in layers)
    assert ours.acts.shape == (len(layers), len(PROMPTS), ours.input_ids.shape[1], tiny.d_model)
    assert ours.acts.dtype == torch.float32
    assert (ours.attention_mask == 0).any(), "the batch should contain padding"
    real = ours.attention_mask.bool()
    torch.testing.assert_close(ours.acts[:, real], ref.acts[:, real])


def test_layers_match_hf_hidden_states_directly(tiny: Backbone) -> None:
    """Independent of full_hidden_states: layer L = HF hidden_states[L + 1]; last layer before final norm."""
    ours = tiny.hidden_states(PROMPTS, [0, 1, 2, 3])
    batch = tiny.encode_batch(PROMPTS)
    with torch.inference_mode():
        out = tiny.model.base_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
    real = batch["attention_mask"].bool()
    for layer in range(3):
        torch.testing.assert_close(ours.acts[layer][real], out.hidden_states[layer + 1][real])
    last = ours.acts[3]
    if tiny.kind == "causal":  # HF's last hidden state is after Llama's final RMSNorm; ours is before it
        with torch.inference_mode():
            last = tiny.model.base_model.norm(last)
        assert not torch.allclose(ours.acts[3][real], out.hidden_states[4][real], atol=1e-3)
    torch.testing.assert_close(last[real], out.hidden_states[4][real])
    # Layers are far apart compared with the tolerance, so a wrong index could not pass.
    assert not torch.allclose(ours.acts[0][real], ours.acts[1][real], atol=1e-2)


def test_forward_stops_after_deepest_layer(tiny: Backbone) -> None:
    calls: Counter[str] = Counter()
    modules = {f"block{i}": block for i, block in enumerate(tiny.blocks)}
    if tiny.kind == "causal":
        modules["norm"] = tiny.model.base_model.norm
        modules["lm_head"] = tiny.model.lm_head
    handles = [m.register_forward_hook(lambda *_, key=k: calls.update([key])) for k, m in modules.items()]
    try:
        tiny.hidden_states(PROMPTS[:2], [1, 0])
        assert calls == Counter(block0=1, block1=1)
        calls.clear()
        tiny.hidden_states(PROMPTS[:2], [-1])
        assert calls == Counter(block0=1, block1=1, block2=1, block3=1)
    finally:
        for handle in handles:
            handle.remove()


def test_lm_head_logits_equal_model_logits(llama: Backbone, bert: Backbone) -> None:
    states = llama.hidden_states(PROMPTS[:2], [-1])
    with torch.inference_mode():
        logits = llama.model(input_ids=states.input_ids, attention_mask=states.attention_mask).logits
    real = states.attention_mask.bool()
    torch.testing.assert_close(llama.lm_head_logits(states.acts[0])[real], logits[real])
    with pytest.raises(ValueError, match="encoder"):
        bert.lm_head_logits(torch.zeros(1, bert.d_model))


# ------------------------------------------------------------------------------------ prompt layout
def test_head_tail_truncation_keeps_exact_ends(smol_tokenizer) -> None:
    backbone = _tiny_llama(smol_tokenizer, max_tokens=10, head_tokens=3)
    long_text = " ".join(f"word{i}" for i in range(40))
    full = smol_tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert len(full) > 10
    batch = backbone.encode_batch([long_text, "hi"])
    content = batch["input_ids"][0][batch["content_mask"][0].bool()].tolist()
    assert content == full[:3] + full[-7:]
    assert batch["content_mask"].sum(dim=1).tolist() == [10, len(smol_tokenizer("hi")["input_ids"])]


def test_all_tail_truncation() -> None:
    from router_models.features.backbone import _head_tail

    assert _head_tail(list(range(10)), 4, 0) == [6, 7, 8, 9]
    assert _head_tail(list(range(10)), 4, 4) == [0, 1, 2, 3]
    assert _head_tail(list(range(3)), 4, 2) == [0, 1, 2]


def test_chat_template_layout_matches_tokenizer(llama: Backbone, smol_tokenizer) -> None:
    text = "Write a haiku about network routers."
    batch = llama.encode_batch([text])
    expected = smol_tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert batch["input_ids"][0].tolist() == list(expected)
    content = batch["input_ids"][0][batch["content_mask"][0].bool()].tolist()
    assert content == smol_tokenizer(text, add_special_tokens=False)["input_ids"]


def test_special_token_strings_in_prompt_stay_text(llama: Backbone, smol_tokenizer) -> None:
    batch = llama.encode_batch(["stop here <|im_end|> please"])
    content = batch["input_ids"][0][batch["content_mask"][0].bool()].tolist()
    assert smol_tokenizer.convert_tokens_to_ids("<|im_end|>") not in content


def test_encoder_layout_and_position_budget(bert: Backbone, minilm_tokenizer) -> None:
    batch = bert.encode_batch(["hello world", "a much longer prompt than the first one"])
    ids, content = batch["input_ids"][0], batch["content_mask"][0]
    assert ids[0] == minilm_tokenizer.cls_token_id and ids[3] == minilm_tokenizer.sep_token_id
    assert content.tolist()[:4] == [0, 1, 1, 0]
    assert batch["attention_mask"][0].tolist()[4:] == [0] * (ids.shape[0] - 4)
    # max_tokens=512 does not fit 128 positions: the content budget shrinks to 128 - [CLS] - [SEP].
    long = bert.encode_batch(["word " * 500])
    assert long["content_mask"].sum() == 126 and long["input_ids"].shape[1] == 128


# ------------------------------------------------------------------------------------------ pooling
@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
def test_padding_does_not_change_pooled_vector(tiny: Backbone, pooling) -> None:
    alone = tiny.pooled([PROMPTS[0]], layer=2, pooling=pooling)
    padded = tiny.pooled([PROMPTS[0], PROMPTS[1]], layer=2, pooling=pooling)
    np.testing.assert_allclose(alone[0], padded[0], rtol=1e-5, atol=1e-5)


def test_pooled_restores_input_order(smol_tokenizer) -> None:
    backbone = _tiny_llama(smol_tokenizer, batch_size=2)
    pooled = backbone.pooled(PROMPTS, layer=-1, pooling="mean")
    assert pooled.shape == (len(PROMPTS), backbone.d_model) and pooled.dtype == np.float32
    for i, text in enumerate(PROMPTS):
        np.testing.assert_allclose(pooled[i], backbone.pooled([text], layer=-1)[0], rtol=1e-5, atol=1e-5)
    assert backbone.pooled([], layer=0).shape == (0, backbone.d_model)


def test_pool_tokens_masks_and_empty_rows() -> None:
    acts = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)  # [batch, tokens, d]
    mask = torch.tensor([[0, 1, 1], [0, 0, 0]])
    assert pool_tokens(acts, mask, "mean").tolist() == [[3.0, 4.0], [0.0, 0.0]]
    assert pool_tokens(acts, mask, "max").tolist() == [[4.0, 5.0], [0.0, 0.0]]
    assert pool_tokens(acts, mask, "last").tolist() == [[4.0, 5.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="pooling"):
        pool_tokens(acts, mask, "median")  # type: ignore[arg-type]


def test_iter_token_activations_covers_every_content_token(smol_tokenizer) -> None:
    backbone = _tiny_llama(smol_tokenizer, batch_size=2, min_fill=0.0)  # batches of 2 whatever their lengths
    reference = backbone.hidden_states(PROMPTS, [0, 2])
    keep = reference.content_mask.bool()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = list(backbone.iter_token_activations(PROMPTS, [0, 2]))
    assert len(seen) == 3
    for acts, prompts in seen:
        assert acts.shape[:1] == (2,) and acts.shape[1] == prompts.shape[0]
        for p in prompts.unique().tolist():
            expected = reference.acts[:, p][:, keep[p]]
            torch.testing.assert_close(acts[:, prompts == p], expected, rtol=1e-5, atol=1e-5)
    counts = Counter(int(p) for _, prompts in seen for p in prompts)
    assert counts == {i: int(keep[i].sum()) for i in range(len(PROMPTS))}


# ------------------------------------------------------------------------------------------ validation
def test_layer_validation(llama: Backbone) -> None:
    for bad in (4, -5):
        with pytest.raises(ValueError, match="n_layers=4"):
            llama.hidden_states(["hi"], [0, bad])
    with pytest.raises(ValueError, match="n_layers=4"):
        llama.pooled(["hi"], layer=7)
    with pytest.raises(ValueError, match="no layers"):
        llama.hidden_states(["hi"], [])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="head_tokens"):
        BackboneConfig(max_tokens=8, head_tokens=9)
    with pytest.raises(ValueError, match="dtype"):
        BackboneConfig(dtype="float64")
    with pytest.raises(ValueError, match="batch_size"):
        BackboneConfig(batch_size=0)
    with pytest.raises(ValueError, match="runtime"):
        BackboneConfig(runtime="tensorrt")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- ONNX runtime
onnx_needed = pytest.mark.skipif(not onnx_available(), reason="onnxruntime, onnx and onnxscript are not installed")
ONNX_LAYERS = (2, 0)  # two layers, out of order, below the last block: the cut and the output order both count


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export per tiny model for the whole module (each takes ~10 s)."""
    return tmp_path_factory.mktemp("onnx-cache")


def _tiny(kind: str, request: pytest.FixtureRequest, **config) -> Backbone:
    if kind == "llama":
        return _tiny_llama(request.getfixturevalue("smol_tokenizer"), **config)
    return _tiny_bert(request.getfixturevalue("minilm_tokenizer"), **config)


@onnx_needed
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_onnx_runtime_matches_torch_and_reuses_its_export(
    kind: str, request: pytest.FixtureRequest, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router_models.features import onnx_runtime

    reference: Backbone = request.getfixturevalue(kind)  # the same seeded weights, run by torch
    fast = _tiny(kind, request, runtime="onnx", cache=str(onnx_cache))
    assert fast.runtime == "torch"  # nothing built before the first forward
    ours, ref = fast.hidden_states(PROMPTS, ONNX_LAYERS), reference.hidden_states(PROMPTS, ONNX_LAYERS)
    assert fast.runtime == "onnx"
    assert ours.layers == ref.layers and ours.acts.shape == ref.acts.shape and ours.acts.dtype == torch.float32
    assert (ours.attention_mask == 0).any(), "the batch should contain padding"
    real = ours.attention_mask.bool()
    torch.testing.assert_close(ours.acts[:, real], ref.acts[:, real], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours.acts[0][real], ours.acts[1][real], atol=1e-2)  # layers really differ
    # The batched path (features, SAE training) goes through the same session, one prompt per batch too.
    batches = zip(
        fast.iter_token_activations(PROMPTS, ONNX_LAYERS),
        reference.iter_token_activations(PROMPTS, ONNX_LAYERS),
        strict=True,
    )
    for (acts, prompt_of), (want_acts, want_prompt_of) in batches:
        assert torch.equal(prompt_of, want_prompt_of)
        torch.testing.assert_close(acts, want_acts, rtol=1e-4, atol=1e-4)
    single = fast.hidden_states(["hi"], ONNX_LAYERS).acts
    torch.testing.assert_close(single, reference.hidden_states(["hi"], ONNX_LAYERS).acts, rtol=1e-4, atol=1e-4)

    key = onnx_runtime.graph_key(fast.model.base_model, sorted(ONNX_LAYERS))
    assert (onnx_cache / "onnx" / f"{key}.onnx").is_file()
    assert not list((onnx_cache / "onnx").glob(".*.tmp")), "no half-written export left behind"

    def no_export(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(onnx_runtime, "export", no_export)
    again = _tiny(kind, request, runtime="onnx", cache=str(onnx_cache))  # a new process's view: same weights
    torch.testing.assert_close(again.hidden_states(PROMPTS, ONNX_LAYERS).acts[:, real], ours.acts[:, real])


@onnx_needed
def test_a_read_only_cache_exports_to_the_temp_dir(
    request: pytest.FixtureRequest, bert: Backbone, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router_models.features import onnx_runtime

    real_export, calls = onnx_runtime.export, []
    readonly = tmp_path / "readonly-cache"

    def export(base: torch.nn.Module, layers: tuple[int, ...], causal: bool, probe: object, path: Path) -> None:
        calls.append(path)
        if readonly in path.parents:
            raise PermissionError(13, "Permission denied", str(path))  # what a non-root user meets in the image
        done = onnx_cache / "onnx" / path.name  # exported by an earlier test: copy it instead of exporting again
        if done.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(done, path)
        else:
            real_export(base, layers, causal, probe, path)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_runtime, "export", export)
    monkeypatch.setattr(onnx_runtime.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    fast = _tiny("bert", request, runtime="onnx", cache=str(readonly))
    got = fast.hidden_states(PROMPTS, ONNX_LAYERS)
    assert fast.runtime == "onnx" and len(calls) == 2
    assert calls[1].parent == tmp_path / "tmp" / "sae-router-onnx" and calls[1].is_file()
    real = got.attention_mask.bool()
    want = bert.hidden_states(PROMPTS, ONNX_LAYERS).acts
    torch.testing.assert_close(got.acts[:, real], want[:, real], rtol=1e-4, atol=1e-4)


def test_onnx_graph_key_follows_weights_and_layers(bert: Backbone) -> None:
    pytest.importorskip("onnx")
    from router_models.features.onnx_runtime import graph_key

    base = bert.model.base_model
    key = graph_key(base, (0, 2))
    assert key == graph_key(base, (0, 2))
    assert key != graph_key(base, (0, 1))
    moved = copy.deepcopy(base)
    moved.config._name_or_path = "/another/cache/all-MiniLM-L6-v2"  # the same weights read from elsewhere
    assert graph_key(moved, (0, 2)) == key
    changed = copy.deepcopy(base)
    with torch.no_grad():
        changed.encoder.layer[3].output.dense.bias.add_(1e-3)  # even a block above the cut: stale graphs never load
    assert key != graph_key(changed, (0, 2))


@onnx_needed
def test_auto_falls_back_to_torch_when_the_export_disagrees(
    request: pytest.FixtureRequest,
    bert: Backbone,
    onnx_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from router_models.features import onnx_runtime

    run = onnx_runtime.OnnxBlocks.__call__

    def off_by_a_little(self: onnx_runtime.OnnxBlocks, *args: torch.Tensor) -> list[torch.Tensor]:
        return [t + 1e-2 for t in run(self, *args)]

    monkeypatch.setattr(onnx_runtime.OnnxBlocks, "__call__", off_by_a_little)
    auto = _tiny("bert", request, runtime="auto", cache=str(onnx_cache))
    with caplog.at_level(logging.WARNING, logger="sae_router.backbone"):
        got = auto.hidden_states(PROMPTS, ONNX_LAYERS)
    assert auto.runtime == "torch"
    assert "falls back to torch" in caplog.text and "OnnxMismatch" in caplog.text
    torch.testing.assert_close(got.acts, bert.hidden_states(PROMPTS, ONNX_LAYERS).acts, rtol=0, atol=0)
    strict = _tiny("bert", request, runtime="onnx", cache=str(onnx_cache))
    with pytest.raises(onnx_runtime.OnnxMismatch, match="differs from torch"):
        strict.hidden_states(PROMPTS, ONNX_LAYERS)


def test_auto_uses_torch_where_onnx_cannot_run(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No onnxruntime installed, or weights that are not float32 on CPU: "auto" runs torch, "onnx" says why."""
    from router_models.features import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: False)
    auto = _tiny("bert", request, runtime="auto", cache=str(tmp_path))
    auto.hidden_states(PROMPTS, (1,))
    assert auto.runtime == "torch" and not (tmp_path / "onnx").exists()
    with pytest.raises(ImportError, match="onnxruntime"):
        _tiny("bert", request, runtime="onnx", cache=str(tmp_path)).hidden_states(PROMPTS, (1,))
    monkeypatch.undo()
    half = _tiny("llama", request, runtime="auto", cache=str(tmp_path), dtype="bfloat16")
    half.hidden_states(PROMPTS, (1,))
    assert half.runtime == "torch" and not (tmp_path / "onnx").exists()
    with pytest.raises(ValueError, match="float32 on CPU"):
        _tiny("llama", request, runtime="onnx", cache=str(tmp_path), dtype="bfloat16").hidden_states(PROMPTS, (1,))


# ----------------------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def real_smol() -> Backbone:
    _cached(SMOL)
    return Backbone.load("HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def real_minilm() -> Backbone:
    _cached(MINILM)
    return Backbone.load(BackboneConfig(name="minilm"))


@pytest.mark.slow
def test_real_smollm2(real_smol: Backbone) -> None:
    assert (real_smol.name, real_smol.kind, real_smol.n_layers, real_smol.d_model) == (SMOL, "causal", 30, 576)
    states = real_smol.hidden_states(PROMPTS[:2], [0, 15, -1])
    ref = real_smol.full_hidden_states(PROMPTS[:2], [0, 15, -1])
    real = states.attention_mask.bool()
    torch.testing.assert_close(states.acts[:, real], ref.acts[:, real])
    again = real_smol.pooled(PROMPTS[:2], layer=15)
    assert again.shape == (2, 576)
    np.testing.assert_array_equal(again, real_smol.pooled(PROMPTS[:2], layer=15))


@pytest.mark.slow
def test_real_minilm(real_minilm: Backbone) -> None:
    assert (real_minilm.name, real_minilm.kind, real_minilm.n_layers, real_minilm.d_model) == (
        MINILM,
        "encoder",
        6,
        384,
    )
    states = real_minilm.hidden_states(PROMPTS[:2], [2, -1])
    ref = real_minilm.full_hidden_states(PROMPTS[:2], [2, -1])
    real = states.attention_mask.bool()
    torch.testing.assert_close(states.acts[:, real], ref.acts[:, real])
    pooled = real_minilm.pooled(PROMPTS, layer=-1)
    assert pooled.shape == (len(PROMPTS), 384)
    np.testing.assert_array_equal(pooled, real_minilm.pooled(PROMPTS, layer=-1))


@pytest.mark.gpu
@pytest.mark.slow
def test_real_smollm2_cuda_bf16() -> None:
    _cached(SMOL)
    backbone = Backbone.load(BackboneConfig(name=SMOL, device="cuda"))
    assert backbone.dtype == torch.bfloat16
    states = backbone.hidden_states(PROMPTS[:2], [0, 15, -1])
    ref = backbone.full_hidden_states(PROMPTS[:2], [0, 15, -1])
    assert states.acts.device.type == "cuda" and states.acts.dtype == torch.float32
    real = states.attention_mask.bool()
    torch.testing.assert_close(states.acts[:, real], ref.acts[:, real])


def test_batch_plan_starts_a_new_batch_where_padding_would_dominate(minilm_tokenizer) -> None:
    lengths = [10, 100, 95, 20, 12, 50]  # longest first: 100 (1), 95 (2), 50 (5), 20 (3), 12 (4), 10 (0)

    def plan(**config: object) -> list[list[int]]:
        return [b.tolist() for b in _tiny_bert(minilm_tokenizer, **config).batch_plan(lengths)]

    assert plan() == [[1, 2], [5], [3], [4], [0]]  # on a CPU a prompt must fill 0.9 of its batch's width
    assert plan(min_fill=0.5) == [[1, 2, 5], [3, 4, 0]]
    assert plan(min_fill=0.0) == [[1, 2, 5, 3, 4, 0]]
    assert plan(min_fill=0.0, batch_size=4) == [[1, 2, 5, 3], [4, 0]]
    with pytest.raises(ValueError, match="min_fill"):
        BackboneConfig(min_fill=1.5)


def test_split_batches_give_every_prompt_the_activations_of_one_padded_batch(minilm_tokenizer) -> None:
    padded, split = _tiny_bert(minilm_tokenizer, min_fill=0.0), _tiny_bert(minilm_tokenizer, min_fill=1.0)
    assert len(split.batch_plan([len(ids) for ids in split.content_ids(PROMPTS)])) > 1

    def per_prompt(backbone: Backbone) -> dict[int, torch.Tensor]:
        out = {}
        for index, states in backbone.batches(PROMPTS, (1,), False):
            for row, i in enumerate(index):
                assert int(i) not in out, "a prompt in two batches"
                out[int(i)] = states.acts[0, row][states.content_mask[row].bool()]
        return out

    want, got = per_prompt(padded), per_prompt(split)
    assert sorted(want) == sorted(got) == list(range(len(PROMPTS)))  # every prompt, once
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(got[i], want[i], rtol=1e-4, atol=1e-4)

"""Backbone: prompts in, a small language model's residual-stream activations out.

In:  prompt strings, the layers to read and a ``BackboneConfig`` (which model, token budget, device).
Out: ``HiddenStates`` (``acts [n_layers, batch, tokens, d_model]`` plus masks) for one batch,
     pooled prompt vectors ``[n, d_model]`` (``Backbone.pooled``), or per-token content activations
     batch by batch (``Backbone.iter_token_activations``, used to train SAEs and pool SAE features).

Layer convention. Layer ``L`` (0-based) is the residual stream *after* transformer block ``L``, i.e.
HF's ``hidden_states[L + 1]``; negative layers count from the end (``-1`` = the last block). The last
layer is the raw output of the last block: Llama-style LMs apply a final RMSNorm after it and HF puts
that normed tensor in ``hidden_states[-1]``; we do not, so every layer lives in the same un-normalised
residual space (SAELens' ``blocks.L.hook_resid_post``). ``lm_head_logits`` applies norm and head.

Prompt layout. The prompt's tokens ("content") are tokenized on their own, with special-token strings
in user text kept as plain text, then cut to ``max_tokens`` (first ``head_tokens`` and the rest from the
tail: the request's opening and its final question both carry routing signal). Causal LMs with a chat
template see ``prefix + content + suffix``, where prefix/suffix come from rendering the template around a
placeholder as one user turn with ``add_generation_prompt=True``; for SmolLM2 that adds its default
system prompt. We read the instruct model's state for the request exactly as it would see it before
answering. Without a template (MiniLM) the tokenizer's own specials wrap the content: ``[CLS] .. [SEP]``.
``content_mask`` marks only content tokens; batches are right-padded.

Early stopping. A forward hook on the deepest requested block stores its output and raises a private
``_StopForward``, so blocks above it (and the final norm / LM head) never run. Hooks sit on the model's
block list (``model.base_model.layers`` for Llama, ``.encoder.layer`` for BERT), so this works for any
HF model whose blocks are called in order from one ``ModuleList``.

Device and dtype: ``"auto"`` picks CUDA when available (bfloat16) else CPU (float32). Activations come
back as float32 on the model's device; ``pooled`` returns a numpy array.
"""

from __future__ import annotations

import copy
import logging
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from router_models.assets import cache_root, packaged_name, resolve_packaged

if TYPE_CHECKING:
    from torch import nn

    from router_models.features.onnx_runtime import OnnxBlocks

__all__ = ["Backbone", "BackboneConfig", "HiddenStates", "Pooling", "Runtime", "pool_tokens"]

log = logging.getLogger("sae_router.backbone")

Pooling = Literal["mean", "max", "last"]
Runtime = Literal["torch", "onnx", "auto"]
Kind = Literal["causal", "encoder"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Where HF keeps the block list under ``model.base_model``: Llama/Mistral/Qwen, BERT, GPT-2.
_BLOCK_PATHS = ("layers", "encoder.layer", "h")
_FINAL_NORMS = ("norm", "ln_f", "final_layernorm")
_PLACEHOLDER = "<<<sae-router-prompt>>>"
# The batch an ONNX graph is checked on against torch: two lengths, so padding is covered.
_ONNX_PROBE = (
    "Warm-up: what is 2 + 2?",
    "Explain in three sentences why the sky looks blue at noon and red at sunset, then name one consequence.",
)
_PROBE_WORD = "hello"


@dataclass(frozen=True)
class BackboneConfig:
    """Which backbone to run and how prompts are cut and batched."""

    name: str = "SmolLM2-135M-Instruct"  # packaged name/alias, local folder, or hub id (needs hub access)
    max_tokens: int = 512  # content tokens kept (before the chat template); also capped by model positions
    head_tokens: int = 64  # on overflow keep the first head_tokens and the last max_tokens - head_tokens
    chat_template: bool = True  # wrap the prompt as one user turn with the tokenizer's chat template
    device: str = "auto"  # "auto": cuda if available else cpu
    dtype: str = "auto"  # "auto": bfloat16 on cuda, float32 on cpu; else float32 | bfloat16 | float16
    batch_size: int = 16  # prompts per forward in pooled / iter_token_activations
    cache: str | None = None  # where packaged backbones are fetched (router_models.assets); None = ~/.cache
    # "torch": eager torch. "onnx": the truncated blocks in onnxruntime (CPU only; exported once into
    # <cache>/onnx, checked against torch; router_models.features.onnx_runtime). "auto": onnx on CPU when
    # onnxruntime is installed and the check passes, else torch.
    runtime: Runtime = "torch"
    # A prompt joins a batch only if its tokens fill at least this share of the batch's width (its longest
    # prompt); shorter ones start the next batch. On a CPU every padded token costs as much as a real one, and
    # batching buys almost nothing: 0.9 routed mixed-length batches of 16 MMLU prompts 1.5x faster than one
    # padded forward (RESULTS §12d). None: 0.9 on CPU, 0 (any length, widest batches) on other devices.
    min_fill: float | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.head_tokens <= self.max_tokens:
            raise ValueError(f"head_tokens must be in 0..{self.max_tokens} (max_tokens), got {self.head_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_fill is not None and not 0 <= self.min_fill <= 1:
            raise ValueError(f"min_fill must be in 0..1, got {self.min_fill}")
        if self.runtime not in ("torch", "onnx", "auto"):
            raise ValueError(f"runtime must be 'torch', 'onnx' or 'auto', got {self.runtime!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}")


@dataclass
class HiddenStates:
    """Activations of one batch; every tensor is on the model's device."""

    layers: tuple[int, ...]  # non-negative layer indices, in the order requested
    acts: torch.Tensor  # [n_layers, batch, tokens, d_model] float32
    attention_mask: torch.Tensor  # [batch, tokens] long, 1 for real tokens, 0 for right padding
    content_mask: torch.Tensor  # [batch, tokens] long, 1 only for the prompt's own tokens
    input_ids: torch.Tensor  # [batch, tokens] long

    def layer(self, layer: int) -> torch.Tensor:
        """Activations of one requested (non-negative) layer: [batch, tokens, d_model]."""
        return self.acts[self.layers.index(layer)]


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block to end the forward there."""


class Backbone:
    """A HF model plus tokenizer that turns prompts into residual-stream activations."""

    def __init__(self, model: Any, tokenizer: Any, config: BackboneConfig, name: str | None = None) -> None:
        self.config = config
        self.name = name or config.name
        self.device = _resolve_device(config.device)
        self.dtype = _resolve_dtype(config.dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.kind: Kind = _kind_of(model)
        self.blocks = _find_blocks(model.base_model)
        self.n_layers = len(self.blocks)
        self.d_model = int(model.config.hidden_size)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._prefix, self._suffix = self._template_ids()
        self._max_content, self._head = self._content_budget()
        self._onnx: dict[tuple[int, ...], OnnxBlocks | None] = {}  # per sorted layer set; None = torch

    @property
    def runtime(self) -> str:
        """What runs the blocks: "onnx" once an ONNX session serves a forward, else "torch"."""
        return "onnx" if any(b is not None for b in self._onnx.values()) else "torch"

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, config: BackboneConfig | str) -> Backbone:
        """Load a packaged backbone (or local folder, or hub id) with its tokenizer."""
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        config = BackboneConfig(name=config) if isinstance(config, str) else config
        source, name = _resolve_source(config.name, config.cache)
        try:
            causal = _is_causal_config(AutoConfig.from_pretrained(source))
            auto = AutoModelForCausalLM if causal else AutoModel
            dtype = _resolve_dtype(config.dtype, _resolve_device(config.device))
            model = auto.from_pretrained(source, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:
            raise OSError(
                f"cannot load backbone {config.name!r}: not a packaged name, not a local folder, "
                f"and loading it as a hub id failed ({err})"
            ) from err
        return cls(model, tokenizer, config, name=name)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, config: BackboneConfig | None = None) -> Backbone:
        """Wrap an in-memory HF model: a ``*ForCausalLM`` for causal LMs, a base model for encoders."""
        return cls(model, tokenizer, config or BackboneConfig(), name=None)

    # -------------------------------------------------------------------------------------- tokenizing
    def encode_batch(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize, cut head+tail, wrap in the template and right-pad.

        Returns CPU tensors ``input_ids``, ``attention_mask``, ``content_mask``: [batch, tokens].
        """
        return self._collate(self.content_ids(texts))

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each prompt's own token ids after head+tail truncation (no template, no specials)."""
        if len(texts) == 0:
            return []
        # split_special_tokens: "<|im_end|>" typed by a user is text, not the end of the turn.
        enc = self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, verbose=False)
        return [_head_tail(ids, self._max_content, self._head) for ids in enc["input_ids"]]

    def _collate(self, contents: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        start = len(self._prefix)
        seqs = [self._prefix + ids + self._suffix for ids in contents]
        width = max((len(s) for s in seqs), default=0)
        input_ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        content_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (seq, ids) in enumerate(zip(seqs, contents, strict=True)):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
            content_mask[row, start : start + len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "content_mask": content_mask}

    def _template_ids(self) -> tuple[list[int], list[int]]:
        """Token ids placed before and after the content."""
        tok = self.tokenizer
        if self.config.chat_template and getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": _PLACEHOLDER}]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            before, found, after = text.partition(_PLACEHOLDER)
            if not found or _PLACEHOLDER in after:
                raise ValueError(f"chat template of {self.name!r} does not render the user turn verbatim")
            return _plain_ids(tok, before), _plain_ids(tok, after)
        # No template: find where the tokenizer's own specials put the text, e.g. [CLS] text [SEP].
        bare = _plain_ids(tok, _PROBE_WORD)
        full = list(tok(_PROBE_WORD, add_special_tokens=True)["input_ids"])
        for i in range(len(full) - len(bare) + 1):
            if full[i : i + len(bare)] == bare:
                return full[:i], full[i + len(bare) :]
        raise ValueError(f"cannot locate the text among the special tokens of {self.name!r}'s tokenizer")

    def _content_budget(self) -> tuple[int, int]:
        """Content tokens kept, and how many of them from the head, within the model's positions."""
        budget = self.config.max_tokens
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None:
            budget = min(budget, int(positions) - len(self._prefix) - len(self._suffix))
        if budget < 1:
            raise ValueError(f"{self.name!r} has no room for content tokens after its template")
        return budget, min(self.config.head_tokens, budget)

    # ---------------------------------------------------------------------------------------- forward
    def hidden_states(self, texts: Sequence[str], layers: int | Sequence[int]) -> HiddenStates:
        """One batch through the blocks up to the deepest requested layer (nothing above it runs)."""
        wanted = self._check_layers(layers)
        if len(texts) == 0:
            raise ValueError("hidden_states needs at least one text")
        return self._run(self.encode_batch(texts), wanted)

    def full_hidden_states(self, texts: Sequence[str], layers: int | Sequence[int]) -> HiddenStates:
        """Reference for parity tests: a full forward with ``output_hidden_states=True``.

        Same layer convention as ``hidden_states``: HF's ``hidden_states[L + 1]``, except that the last
        layer is the last block's raw output (taken with a passive hook), since HF's ``hidden_states[-1]``
        has the final norm applied for Llama-style LMs.
        """
        wanted = self._check_layers(layers)
        batch = self.encode_batch(texts)
        last: list[torch.Tensor] = []
        handle = self.blocks[-1].register_forward_hook(lambda _m, _a, out: last.append(_first(out)))
        try:
            with torch.inference_mode():
                out = self.model.base_model(**self._model_inputs(batch), output_hidden_states=True)
        finally:
            handle.remove()
        states = [last[0] if layer == self.n_layers - 1 else out.hidden_states[layer + 1] for layer in wanted]
        return self._states(batch, wanted, states)

    def _run(self, batch: dict[str, torch.Tensor], layers: tuple[int, ...]) -> HiddenStates:
        blocks = self._onnx_blocks(layers)
        if blocks is None:
            return self._run_torch(batch, layers)
        outs = dict(zip(blocks.layers, blocks(batch["input_ids"], batch["attention_mask"]), strict=True))
        return self._states(batch, layers, [outs[layer] for layer in layers])

    def _onnx_blocks(self, layers: tuple[int, ...]) -> OnnxBlocks | None:
        """The checked ONNX session for these layers, built on first use; None means torch runs them."""
        runtime = self.config.runtime
        if runtime == "torch":
            return None
        key = tuple(sorted(set(layers)))
        if key in self._onnx:
            return self._onnx[key]
        from router_models.features.onnx_runtime import OnnxBlocks, onnx_available

        blocks = None
        try:
            if self.device.type != "cpu" or self.dtype != torch.float32:
                raise ValueError(f"the onnx runtime runs float32 on CPU, not {self.dtype} on {self.device}")
            if not onnx_available():
                raise ImportError("runtime 'onnx' needs onnxruntime, onnx and onnxscript installed")
            probe = self._collate(self.content_ids(_ONNX_PROBE))
            reference = list(self._run_torch(probe, key).acts)
            blocks = OnnxBlocks.build(
                self.model.base_model,
                key,
                causal=self.kind == "causal",
                truncate=self.truncated_copy,
                probe=probe,
                reference=reference,
                cache=cache_root(self.config.cache),
                threads=torch.get_num_threads(),
            )
        except Exception as exc:  # "auto" must keep serving on torch whatever the export or check did
            if runtime == "onnx":
                raise
            log.warning("backbone %s: runtime auto falls back to torch (%s: %s)", self.name, type(exc).__name__, exc)
        self._onnx[key] = blocks
        return blocks

    def truncated_copy(self, deepest: int) -> nn.Module:
        """A copy of the base model that ends at block ``deepest``: the blocks above it removed and the final
        norm made identity, so its ``hidden_states[L + 1]`` is block L's raw output (this module's convention)."""
        cut = copy.deepcopy(self.model.base_model)
        del _find_blocks(cut)[deepest + 1 :]
        for name in _FINAL_NORMS:
            if isinstance(getattr(cut, name, None), torch.nn.Module):
                setattr(cut, name, torch.nn.Identity())
        config = getattr(cut, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = deepest + 1  # Llama builds per-layer mask types from it
            if isinstance(getattr(config, "layer_types", None), list):
                config.layer_types = config.layer_types[: deepest + 1]
        return cut

    def _run_torch(self, batch: dict[str, torch.Tensor], layers: tuple[int, ...]) -> HiddenStates:
        captured: dict[int, torch.Tensor] = {}
        deepest = max(layers)

        def hook_for(layer: int) -> Any:
            def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                captured[layer] = _first(output)
                if layer == deepest:
                    raise _StopForward

            return hook

        handles = [self.blocks[layer].register_forward_hook(hook_for(layer)) for layer in set(layers)]
        try:
            with torch.inference_mode():
                self.model.base_model(**self._model_inputs(batch))
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != len(set(layers)):
            raise RuntimeError(f"{self.name!r}: blocks did not run in order; got layers {sorted(captured)}")
        return self._states(batch, layers, [captured[layer] for layer in layers])

    def _model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
        }
        if self.kind == "causal":
            inputs["use_cache"] = False
        return inputs

    def _states(
        self, batch: dict[str, torch.Tensor], layers: tuple[int, ...], states: list[torch.Tensor]
    ) -> HiddenStates:
        return HiddenStates(
            layers=layers,
            acts=torch.stack(states).float(),
            attention_mask=batch["attention_mask"].to(self.device),
            content_mask=batch["content_mask"].to(self.device),
            input_ids=batch["input_ids"].to(self.device),
        )

    def _check_layers(self, layers: int | Sequence[int]) -> tuple[int, ...]:
        """Validate layers and map negative ones to 0..n_layers-1."""
        items = [layers] if isinstance(layers, int) else list(layers)
        if not items:
            raise ValueError("no layers requested")
        n = self.n_layers
        out = []
        for layer in map(operator.index, items):
            if not -n <= layer < n:
                raise ValueError(f"layer {layer} out of range for {self.name!r}: n_layers={n}")
            out.append(layer % n)
        return tuple(out)

    # ---------------------------------------------------------------------------------------- batched
    def pooled(self, texts: Sequence[str], layer: int, pooling: Pooling = "mean", progress: bool = False) -> np.ndarray:
        """One vector per prompt, pooled over its content tokens: [n, d_model] float32, input order."""
        wanted = self._check_layers(layer)
        out = np.zeros((len(texts), self.d_model), dtype=np.float32)
        for index, states in self.batches(texts, wanted, progress):
            out[index] = pool_tokens(states.acts[0], states.content_mask, pooling).cpu().numpy()
        return out

    def iter_token_activations(
        self, texts: Sequence[str], layers: int | Sequence[int], progress: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch: content-token activations ``[n_layers, n_content_tokens, d_model]`` (float32,
        flattened over the batch) and each token's prompt index into ``texts`` ``[n_content_tokens]``.

        Batches come longest prompts first, not in input order; use the indices.
        """
        wanted = self._check_layers(layers)
        for index, states in self.batches(texts, wanted, progress):
            keep = states.content_mask.bool()  # [batch, tokens]
            prompts = torch.as_tensor(index, device=keep.device)[:, None].expand_as(keep)
            yield states.acts[:, keep], prompts[keep]

    def batches(
        self, texts: Sequence[str], layers: tuple[int, ...], progress: bool
    ) -> Iterator[tuple[np.ndarray, HiddenStates]]:
        """Forward ``texts`` in length-sorted batches; yields (input indices, states) per batch."""
        from tqdm.auto import tqdm

        contents = self.content_ids(texts)
        with tqdm(total=len(contents), disable=not progress, unit="prompt", desc=self.name) as bar:
            for index in self.batch_plan([len(ids) for ids in contents]):
                yield index, self._run(self._collate([contents[i] for i in index]), layers)
                bar.update(len(index))

    def batch_plan(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Input indices per forward: longest first (similar lengths share a batch and any OOM shows up at
        once), at most ``batch_size`` each, a new batch wherever a prompt fills less than ``min_fill`` of it."""
        fill = self.config.min_fill
        if fill is None:
            fill = 0.9 if self.device.type == "cpu" else 0.0
        order = np.argsort([-n for n in lengths], kind="stable")
        plan: list[np.ndarray] = []
        start = 0
        for end in range(1, len(order) + 1):
            full = end - start == self.config.batch_size
            if end == len(order) or full or lengths[order[end]] < fill * lengths[order[start]]:
                plan.append(order[start:end])
                start = end
        return plan

    # ------------------------------------------------------------------------------------------ logits
    def lm_head_logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Next-token logits from the last layer's raw output: [..., d_model] -> [..., vocab] float32.

        Applies the final norm and the LM head, so it equals the model's own logits.
        """
        if self.kind != "causal":
            raise ValueError(f"{self.name!r} is an encoder; it has no LM head")
        base = self.model.base_model
        norm = next((getattr(base, n) for n in _FINAL_NORMS if hasattr(base, n)), None)
        head = self.model.get_output_embeddings()
        if norm is None or head is None:
            raise ValueError(f"cannot find the final norm and LM head of {type(self.model).__name__}")
        with torch.inference_mode():
            return head(norm(hidden_last.to(self.device, self.dtype))).float()


def pool_tokens(acts: torch.Tensor, mask: torch.Tensor, pooling: Pooling = "mean") -> torch.Tensor:
    """Pool ``acts [batch, tokens, d]`` over tokens where ``mask [batch, tokens]`` is 1 -> [batch, d].

    Rows with no masked-in token (an empty prompt) pool to zeros.
    """
    keep = mask.bool()
    has_any = keep.any(dim=1, keepdim=True)  # [batch, 1]
    if pooling == "mean":
        summed = (acts * keep[..., None]).sum(dim=1)
        return summed / keep.sum(dim=1, keepdim=True).clamp(min=1)
    if pooling == "max":
        peak = acts.masked_fill(~keep[..., None], float("-inf")).amax(dim=1)
        return torch.where(has_any, peak, torch.zeros_like(peak))
    if pooling == "last":
        positions = torch.arange(keep.shape[1], device=keep.device)
        last = (positions * keep).amax(dim=1)  # [batch]
        picked = acts[torch.arange(acts.shape[0], device=acts.device), last]
        return torch.where(has_any, picked, torch.zeros_like(picked))
    raise ValueError(f"pooling must be 'mean', 'max' or 'last', got {pooling!r}")


def _head_tail(ids: list[int], max_tokens: int, head: int) -> list[int]:
    """Keep the first ``head`` and the last ``max_tokens - head`` ids when there are too many."""
    if len(ids) <= max_tokens:
        return list(ids)
    return list(ids[:head]) + list(ids[len(ids) - (max_tokens - head) :])


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _first(output: Any) -> torch.Tensor:
    """A block's hidden-state output (some blocks return a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _resolve_source(name: str, cache: str | None = None) -> tuple[str, str]:
    """(what ``from_pretrained`` loads, display name) for a packaged name, local folder or hub id."""
    canonical = packaged_name(name)
    if canonical is not None:
        return str(resolve_packaged(canonical, cache=cache)), canonical
    path = Path(name).expanduser()
    return (str(path), name) if path.exists() else (name, name)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _is_causal_config(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or bool(getattr(config, "is_decoder", False))


def _kind_of(model: Any) -> Kind:
    causal = type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    return "causal" if causal or getattr(model.config, "is_decoder", False) else "encoder"


def _find_blocks(base: Any) -> Any:
    """The ``ModuleList`` of transformer blocks under a HF base model."""
    for path in _BLOCK_PATHS:
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, torch.nn.ModuleList) and len(node) > 0:
            return node
    raise ValueError(f"cannot find the transformer blocks of {type(base).__name__} (tried {_BLOCK_PATHS})")

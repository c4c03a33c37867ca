"""ONNX Runtime for the truncated backbone: the CPU fast path of the request path (issue 13).

In:  a :class:`~router_models.features.backbone.Backbone`'s HF model, the layers to read, a cache folder.
Out: :class:`OnnxBlocks`, a callable ``(input_ids, attention_mask) -> [activations per layer]`` that runs the
     blocks up to the deepest requested layer in onnxruntime instead of eager torch.

Why: a short prompt through MiniLM's first 4 blocks costs ~16 ms in eager torch on the 2-core CPU, most of it
per-module Python and dispatch overhead; the same graph in onnxruntime takes ~5 ms (benchmarks/RESULTS.md §12c).

Export. The Backbone's copy of the model cut after the deepest requested layer (:meth:`Backbone.truncated_copy`:
every ``hidden_states[L + 1]`` is then block L's raw output, the Backbone's layer convention) is exported by
``torch.onnx.export`` (the dynamo exporter) with dynamic batch and token axes. The file is kept at
``<cache>/onnx/<key>.onnx`` (the temp dir's ``sae-router-onnx/`` when the cache is read-only; the serving image
exports at build time instead); the key hashes the model's class, config and weights, the layers and the torch /
onnx versions, so new weights or versions never reuse a stale graph. It is written to a temporary name and renamed,
so processes starting together never read half a file.

Check. Before a session is used, a probe batch (two prompts of different lengths, so padding is covered) goes
through both runtimes; :class:`OnnxMismatch` is raised unless every real token's activations agree within
``atol + rtol · max|torch|``. The Backbone falls back to torch when ``runtime="auto"``.

Needs ``onnxruntime`` (to run) and ``onnx`` + ``onnxscript`` (to export); imported only here, on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OnnxBlocks", "OnnxMismatch", "onnx_available"]

log = logging.getLogger("sae_router.onnx")

OPSET = 18


class OnnxMismatch(RuntimeError):
    """The exported graph does not reproduce torch's activations on the probe batch."""


def onnx_available() -> bool:
    """Whether onnxruntime and the exporter's libraries are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


class _Truncated(torch.nn.Module):
    """The base model cut after block ``layers[-1]``: returns each requested layer's raw block output."""

    def __init__(self, base: nn.Module, layers: Sequence[int], causal: bool) -> None:
        super().__init__()
        self.base, self.layers, self.causal = base, tuple(layers), causal

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs: dict[str, Any] = {"output_hidden_states": True, "return_dict": True}
        if self.causal:
            kwargs["use_cache"] = False
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return tuple(out.hidden_states[layer + 1] for layer in self.layers)


def graph_key(base: nn.Module, layers: Sequence[int]) -> str:
    """Hash of what the exported graph depends on: the model's class, config and weights, the layers, versions."""
    import onnx

    h = hashlib.sha256()
    config = getattr(base, "config", None)
    settings = config.to_dict() if config is not None else {}
    settings.pop("_name_or_path", None)  # where the weights were read from: the same model from another cache
    meta = {
        "class": type(base).__name__,
        "config": settings,
        "layers": list(layers),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": OPSET,
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(base.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def export(
    truncated: nn.Module, layers: Sequence[int], causal: bool, example: dict[str, torch.Tensor], path: Path
) -> None:
    """Export ``truncated`` (the base model cut after block ``max(layers)``: :meth:`Backbone.truncated_copy`) to
    ``path`` (atomically: a temporary file renamed into place)."""
    module = _Truncated(truncated, layers, causal).eval()
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    shapes = {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The exporter logs every graph pass at INFO; the gateway's INFO log should say "exporting" once, not that.
    chatty = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in chatty]
    for logger in chatty:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example["input_ids"], example["attention_mask"]),
                input_names=["input_ids", "attention_mask"],
                output_names=[f"layer_{layer}" for layer in layers],
                dynamic_shapes=shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            if program is None:
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(tmp), external_data=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)


class OnnxBlocks:
    """An onnxruntime session over the truncated backbone for one set of layers (sorted, unique)."""

    def __init__(self, path: Path, layers: Sequence[int], threads: int) -> None:
        import onnxruntime as ort

        self.path, self.layers = path, tuple(layers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between ops: the gateway's event loop shares these cores (RESULTS §12c).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena: it kept its peak (a batch of 32 long prompts) for the process's life, ~100 MB more
        # resident, and per-run allocation routed a short prompt no slower (RESULTS §12d).
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        feed = {
            "input_ids": input_ids.numpy().astype(np.int64),
            "attention_mask": attention_mask.numpy().astype(np.int64),
        }
        return [torch.from_numpy(out) for out in self.session.run(None, feed)]

    @classmethod
    def build(
        cls,
        base: nn.Module,
        layers: Sequence[int],
        *,
        causal: bool,
        truncate: Callable[[int], nn.Module],
        probe: dict[str, torch.Tensor],
        reference: Sequence[torch.Tensor],
        cache: Path,
        threads: int,
        rtol: float = 1e-4,
        atol: float = 1e-4,
    ) -> OnnxBlocks:
        """The session for ``layers``, exporting ``truncate(max(layers))`` on first use, checked on ``probe``
        against ``reference`` (torch's activations per layer for that batch)."""
        name = f"{graph_key(base, layers)}.onnx"
        path = cache / "onnx" / name
        if not path.is_file():
            log.info("exporting the backbone's first %d blocks to ONNX (%s), once", max(layers) + 1, path)
            try:
                export(truncate(max(layers)), layers, causal, probe, path)
            except PermissionError:  # a read-only cache (a container's baked-in one): this process's temp dir
                path = Path(tempfile.gettempdir()) / "sae-router-onnx" / name
                log.info("%s is read-only: exporting to %s instead", cache, path)
                if not path.is_file():
                    export(truncate(max(layers)), layers, causal, probe, path)
        blocks = cls(path, layers, threads)
        got = blocks(probe["input_ids"], probe["attention_mask"])
        real = probe["attention_mask"].bool()
        for layer, ours, ref in zip(layers, got, reference, strict=True):
            ref = ref.float().cpu()
            diff = float((ours[real] - ref[real]).abs().max())
            tol = atol + rtol * float(ref[real].abs().max())
            if not diff <= tol:
                raise OnnxMismatch(f"{path}: layer {layer} differs from torch by {diff:.3g} (tolerance {tol:.3g})")
        return blocks

"""Train the SAE a router reads: prompts → backbone activations → TopK SAE or RouteSAE → metrics and labels.

In:  routing dataset files (their *train* prompts) or plain text files (one prompt per line), a backbone,
     and an :class:`SAEJob` (kind, layer(s), width, k, token budget).
Out: a folder with the SAE (sae-lens format for ``sae``; :mod:`router_models.features.routesae` format for
     ``routesae``), ``sae_router.json`` (backbone settings, layer(s), training log summary and metrics:
     NMSE, explained variance, L0, dead-latent fraction, downstream KL) and ``labels.json`` (feature labels).

The default SAE is made by (≤ 30 min on 2 CPU cores, see benchmarks/RESULTS.md)::

    sae-router train-sae --out router_models/default_sae

Held-out prompts (10%) are kept out of training and used for every metric.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from router_models.features.backbone import Backbone, BackboneConfig

__all__ = ["SAEJob", "collect_prompts", "run_job"]

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing"


@dataclass
class SAEJob:
    """One SAE training run. Every field is a CLI option of ``sae-router train-sae``."""

    out: str
    """Output folder."""
    data: list[str] = field(default_factory=list)
    """Dataset files (train split used) or .txt files; empty = every parquet under ../shared/data/routing."""
    backbone: str = "SmolLM2-135M-Instruct"
    """Backbone name, path or hub id."""
    kind: str = "sae"
    """``sae`` (one layer, TopK) or ``routesae`` (RouteSAE over layers ¼..¾ of depth)."""
    layer: int | None = None
    """Layer of a single-layer SAE; default: the middle block."""
    d_sae: int = 4096
    """Latents."""
    k: int = 32
    """Active latents per token."""
    max_prompts: int = 3000
    """Prompts sampled from the data (balanced across files)."""
    max_tokens: int = 128
    """Tokens kept per prompt (head + tail)."""
    steps: int = 1500
    """Optimizer steps (batch 1024 tokens; the activation buffer is reshuffled each epoch)."""
    batch_size: int = 1024
    """Tokens per optimizer step."""
    kl_prompts: int = 40
    """Held-out prompts used for the downstream KL metric."""
    label_prompts: int = 600
    """Prompts used to label features (top tokens, task association)."""
    seed: int = 0
    """Seeds sampling and training."""


def collect_prompts(paths: Sequence[str | Path], max_prompts: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deduplicated train prompts and their task labels, sampled evenly across files (seeded)."""
    from router_models.data import load_dataset, normalize_prompt

    per_file: list[list[tuple[str, str]]] = []
    for p in paths:
        p = Path(p)
        if p.suffix == ".txt":
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            per_file.append([(ln, p.stem) for ln in lines])
            continue
        ds = load_dataset(p).split("train")
        per_file.append([(str(t), f"{ds.name}:{task}") for t, task in zip(ds.prompts, ds.tasks, strict=True)])
    rng = random.Random(seed)
    for items in per_file:
        rng.shuffle(items)
    quota = math.ceil(max_prompts / max(len(per_file), 1))
    seen: set[str] = set()
    texts, tasks = [], []
    for items in per_file:
        taken = 0
        for text, task in items:
            key = normalize_prompt(text)
            if key in seen or taken >= quota:
                continue
            seen.add(key)
            texts.append(text)
            tasks.append(task)
            taken += 1
    pairs = list(zip(texts, tasks, strict=True))[:max_prompts]
    rng.shuffle(pairs)  # files were taken in order: mix them so held-out and label prompts span every file
    return [t for t, _ in pairs], [k for _, k in pairs]


def _keep_first(fn: Any) -> Any:
    """Splice ``fn`` at every position but the first: the first token's residual is the attention sink,
    with a norm far outside what the SAE was trained on (it only sees prompt tokens); SAE evaluations
    conventionally leave it (BOS) alone."""

    def spliced(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[:, :1], fn(h[:, 1:])], dim=1)

    return spliced


def _activations(backbone: Backbone, texts: Sequence[str], layers: Sequence[int]) -> torch.Tensor:
    """Content-token activations ``[tokens, L, d]`` (float32, CPU)."""
    chunks = [acts.permute(1, 0, 2).cpu() for acts, _ in backbone.iter_token_activations(texts, layers, True)]
    return torch.cat(chunks)


def _routesae_kl(backbone: Backbone, model: Any, texts: Sequence[str], max_tokens: int = 128) -> float:
    """Downstream KL when each token's routed layer is replaced by the RouteSAE reconstruction.

    A clean pass fixes each token's routing (RouteSAE eq. 7–8); a second pass swaps, at each routed layer,
    the tokens routed there for their reconstruction mapped back to that layer's scale (undoing the
    per-token standardization and, for hard routing, the p_{i*} factor of eq. 9).
    """
    import torch.nn.functional as F

    blocks = backbone.model.base_model.layers
    total, count = 0.0, 0
    for text in texts:
        ids = backbone.tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        with torch.inference_mode():
            out = backbone.model(input_ids=ids, output_hidden_states=True)
            log_p = F.log_softmax(out.logits.float(), -1)
            x = torch.stack([out.hidden_states[i + 1][0] for i in model.layers], dim=1).float()  # [T, L, d]
            routed = model(x)
            mean, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True) + 1e-6
            t = torch.arange(x.shape[0])
            p_top = routed.p[t, routed.layer].unsqueeze(-1)
            back = routed.reconstruction / p_top * std[t, routed.layer] + mean[t, routed.layer]
        handles = []
        for j, layer in enumerate(model.layers):
            where = routed.layer == j
            where[0] = False  # leave the first (attention-sink) token alone, as for the single-layer SAE

            def hook(_m: Any, _i: Any, output: Any, where: torch.Tensor = where, back: torch.Tensor = back) -> Any:
                hidden = output[0] if isinstance(output, tuple) else output
                hidden = hidden.clone()
                hidden[0, where] = back[where].to(hidden.dtype)
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

            handles.append(blocks[layer].register_forward_hook(hook))
        try:
            with torch.inference_mode():
                log_q = F.log_softmax(backbone.model(input_ids=ids).logits.float(), -1)
        finally:
            for h in handles:
                h.remove()
        total += (log_p.exp() * (log_p - log_q)).sum().item()
        count += ids.numel()
    return total / max(count, 1)


def run_job(job: SAEJob, progress: bool = True, cache: str | Path | None = None) -> dict[str, Any]:
    """Train, evaluate, label and save; returns the metrics written to ``sae_router.json``."""
    from router_models.features.encoder import make_encoder

    started = time.perf_counter()
    torch.manual_seed(job.seed)
    paths = job.data or [str(p) for p in sorted(DEFAULT_DATA.glob("*.parquet"))]
    texts, tasks = collect_prompts(paths, job.max_prompts, job.seed)
    n_eval = max(1, len(texts) // 10)
    eval_texts, train_texts = texts[:n_eval], texts[n_eval:]
    bcfg = BackboneConfig(
        name=job.backbone, max_tokens=job.max_tokens, head_tokens=32, batch_size=16, cache=str(cache) if cache else None
    )
    backbone = Backbone.load(bcfg)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    if job.kind == "sae":
        metrics, layers = _train_single(job, backbone, train_texts, eval_texts, out, progress)
    elif job.kind == "routesae":
        metrics, layers = _train_route(job, backbone, train_texts, eval_texts, out, progress)
    else:
        raise ValueError(f"unknown SAE kind {job.kind!r}: use sae or routesae")
    meta: dict[str, Any] = {
        "kind": job.kind,
        "layer": layers[0] if job.kind == "sae" else None,
        "layers": layers,
        "backbone": {"name": job.backbone, "max_tokens": job.max_tokens, "head_tokens": 32, "chat_template": True},
        "job": asdict(job),
        "n_train_prompts": len(train_texts),
        "n_eval_prompts": len(eval_texts),
        "metrics": metrics,
    }
    (out / "sae_router.json").write_text(json.dumps(meta, indent=2) + "\n")
    encoder = make_encoder(out)
    from router_models.features.labels import label_features

    lab = label_features(backbone, encoder, texts[: job.label_prompts], tasks[: job.label_prompts], progress=progress)
    (out / "labels.json").write_text(json.dumps(lab, indent=1) + "\n")
    meta["metrics"]["seconds_total"] = round(time.perf_counter() - started, 1)
    meta["n_labelled_latents"] = len(lab["latents"])
    (out / "sae_router.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _train_single(
    job: SAEJob, backbone: Backbone, train_texts: list[str], eval_texts: list[str], out: Path, progress: bool
) -> tuple[dict[str, Any], list[int]]:
    from router_models.features.sae import SAETrainConfig, downstream_kl, evaluate_sae, save_sae, train_topk_sae

    layer = job.layer if job.layer is not None else backbone.n_layers // 2
    acts = _activations(backbone, train_texts, [layer])[:, 0]
    cfg = SAETrainConfig(
        d_in=backbone.d_model,
        d_sae=job.d_sae,
        k=job.k,
        batch_size=job.batch_size,
        total_steps=job.steps,
        seed=job.seed,
        # Gao et al. call a latent dead after 10M silent tokens in runs of billions; our runs see ~1M tokens,
        # so the AuxK window is scaled down to 50 steps or it would never switch on.
        dead_tokens=50 * job.batch_size,
    )
    sae, log = train_topk_sae(acts, cfg, progress=progress)
    save_sae(sae, out)
    held = _activations(backbone, eval_texts, [layer])[:, 0]
    metrics = evaluate_sae(sae, held)
    kl_texts = eval_texts[: job.kl_prompts]
    if backbone.kind == "causal":
        metrics["kl"] = downstream_kl(
            backbone.model, backbone.tokenizer, _keep_first(lambda h: sae.decode(sae.encode(h))), layer, kl_texts
        )
        metrics["kl_zero_ablation"] = downstream_kl(
            backbone.model, backbone.tokenizer, _keep_first(torch.zeros_like), layer, kl_texts
        )
    metrics.update(
        train_tokens=int(acts.shape[0]),
        steps=log["steps"],
        train_seconds=round(log["seconds"], 1),
        final_mse=log["mse_loss"][-1],
    )
    return metrics, [layer]


def _train_route(
    job: SAEJob, backbone: Backbone, train_texts: list[str], eval_texts: list[str], out: Path, progress: bool
) -> tuple[dict[str, Any], list[int]]:
    from router_models.features.routesae import (
        RouteSAEConfig,
        default_routed_layers,
        evaluate_routesae,
        save_routesae,
        train_routesae,
    )

    layers = default_routed_layers(backbone.n_layers)
    acts = _activations(backbone, train_texts, layers).half()  # [tokens, L, d]: halves the buffer's memory
    cfg = RouteSAEConfig(
        d_in=backbone.d_model,
        layers=layers,
        d_sae=job.d_sae,
        k=job.k,
        batch_size=job.batch_size,
        total_steps=job.steps,
        seed=job.seed,
        aux_k_coef=1 / 32,  # same dead-latent loss and window as the single-layer SAE, for a fair comparison
        dead_tokens=50 * job.batch_size,
    )
    model, log = train_routesae(acts, cfg, progress=progress)
    save_routesae(model, out)
    del acts
    held = _activations(backbone, eval_texts, layers)
    metrics = evaluate_routesae(model, held)
    if backbone.kind == "causal":
        metrics["kl"] = _routesae_kl(backbone, model, eval_texts[: job.kl_prompts])
    metrics.update(steps=log["steps"], train_seconds=round(log["seconds"], 1), final_mse=log["mse_loss"][-1])
    return metrics, layers

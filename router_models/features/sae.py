"""TopK sparse autoencoders on one layer's residual stream, built on sae-lens.

In:  residual-stream activations of one layer, ``[n_tokens, d_in]`` (a shuffled tensor buffer, or an
     iterable of ``[batch, d_in]`` tensors) and an :class:`SAETrainConfig`; or a pretrained SAE's
     release/id (or local folder).
Out: a sae-lens inference ``TopKSAE``, whose ``encode(raw_acts) -> [n_tokens, d_sae]`` gives the features,
     plus a training log; reconstruction metrics (:func:`evaluate_sae`) and the spliced-model metric
     (:func:`downstream_kl`); sae-lens's own on-disk format (``cfg.json`` + ``sae_weights.safetensors``)
     through :func:`save_sae` / :func:`load_sae`.

Training follows Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (arXiv 2406.04093), and
runs on sae-lens's objects: ``TopKTrainingSAE.training_forward_pass`` computes the MSE and the AuxK
dead-latent loss, ``SAETrainer.step`` does Adam, gradient clipping and dead-latent bookkeeping. We drive
``step`` ourselves rather than calling ``SAETrainer.fit`` so that plain tensors feed it, the schedule is
:func:`lr_lambda` (shared with ``routesae.py``), the progress bar is ours and a log comes back
(``fit`` only reports to wandb). The input scale (Gao §A.1) is folded into the weights at the end, as
``fit`` does, so the returned SAE works on raw activations.

``import sae_lens`` takes seconds, so it happens inside the functions that need it.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from sae_lens import SAE, SAETrainer, TrainingSAE

__all__ = [
    "ReconstructFn",
    "SAETrainConfig",
    "TopKTrainBase",
    "downstream_kl",
    "evaluate_sae",
    "iter_batches",
    "load_pretrained",
    "load_sae",
    "lr_lambda",
    "resolve_steps",
    "save_sae",
    "to_inference_sae",
    "train_topk_sae",
]

ReconstructFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps hidden states ``[..., d_model]`` to their reconstruction ``[..., d_model]`` (an SAE is one)."""


@dataclass(kw_only=True)
class TopKTrainBase:
    """What every TopK-SAE trainer here takes (the single-layer SAE and the RouteSAE); defaults after Gao et
    al. 2024 and RouteSAE §4. Subclasses add their own fields and may change a default."""

    d_in: int
    """Width of the activations (the backbone's hidden size)."""
    d_sae: int | None = None
    """Number of latents; ``None`` means ``expansion_factor * d_in``."""
    expansion_factor: int = 8
    """Latents per input dimension, used when ``d_sae`` is ``None``."""
    k: int = 32
    """Active latents per token (the TopK activation, Gao eq. 3)."""
    lr: float = 5e-4
    """Peak Adam learning rate."""
    batch_size: int = 4096
    """Tokens per step. A tensor buffer is cut to it; an iterable keeps its own (set this to match)."""
    total_steps: int | None = None
    """Optimizer steps. ``None``: ``ceil(n_tokens / batch_size)``, else one pass over a tensor buffer."""
    n_tokens: int | None = None
    """Training tokens; gives ``total_steps = ceil(n_tokens / batch_size)`` when that is ``None``."""
    warmup_frac: float = 0.05
    """Fraction of steps with linear LR warm-up (RouteSAE §4: 5%)."""
    decay_frac: float = 0.2
    """Fraction of final steps with linear LR decay to 0 (RouteSAE §4: 20%; the 75% between is constant)."""
    aux_k_coef: float = 1 / 32
    """Weight α of the AuxK dead-latent loss (Gao §A.2: 1/32); 0 turns it off."""
    dead_tokens: int = 10_000_000
    """A latent that has not fired for this many training tokens counts as dead (Gao §A.2: 10M)."""
    seed: int = 0
    """Seeds the weight init and the shuffling of a tensor buffer."""
    device: str = "cpu"
    """Device for training and for the returned model."""

    @property
    def n_latents(self) -> int:
        """``d_sae``, resolved from the expansion factor when unset."""
        return self.d_sae if self.d_sae is not None else self.expansion_factor * self.d_in

    def dead_window_steps(self, batch_size: int) -> int:
        """``dead_tokens`` in optimizer steps of ``batch_size`` tokens (sae-lens counts steps)."""
        return max(1, math.ceil(self.dead_tokens / batch_size))


@dataclass(kw_only=True)
class SAETrainConfig(TopKTrainBase):
    """How to train a TopK SAE on one layer."""

    normalize_activations: bool = True
    """Scale inputs by one constant so that E[||x||²] = d_in (Gao §A.1); folded into the saved weights."""
    n_norm_tokens: int = 65_536
    """Tokens used to estimate that scale (and the initial decoder bias)."""


def lr_lambda(step: int, total: int, warmup: float = 0.05, decay: float = 0.2) -> float:
    """LR multiplier at ``step`` (0-based) of ``total`` steps.

    RouteSAE §4: linear warm-up over the first ``warmup`` fraction, constant, then linear decay to 0
    over the last ``decay`` fraction (5% / 75% / 20% by default). Used by both trainers.
    """
    n_warm, n_decay = int(total * warmup), int(total * decay)
    if step < n_warm:
        return (step + 1) / n_warm
    if step >= total - n_decay:
        return max(0.0, (total - step) / n_decay)
    return 1.0


def iter_batches(
    activations: torch.Tensor | Iterable[torch.Tensor], batch_size: int, n_steps: int, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Yield up to ``n_steps`` batches ``[batch, ...]``.

    A tensor ``[n_tokens, ...]`` is reshuffled (seeded) every epoch and cycled; an iterable of batches
    is passed through as it comes and may run out early.
    """
    if not isinstance(activations, torch.Tensor):
        yield from itertools.islice(activations, n_steps)
        return
    gen = torch.Generator().manual_seed(seed)
    n = activations.shape[0]
    size = min(batch_size, n)
    done = 0
    while done < n_steps:
        perm = torch.randperm(n, generator=gen).to(activations.device)
        for start in range(0, n - size + 1, size):
            if done == n_steps:
                return
            yield activations[perm[start : start + size]]
            done += 1


def resolve_steps(
    activations: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int,
    total_steps: int | None,
    n_tokens: int | None,
) -> int:
    """Optimizer steps: ``total_steps``, else from ``n_tokens``, else one pass over a tensor buffer."""
    if total_steps is not None:
        return total_steps
    if n_tokens is not None:
        return max(1, math.ceil(n_tokens / batch_size))
    if isinstance(activations, torch.Tensor):
        return max(1, activations.shape[0] // batch_size)
    raise ValueError("an iterable of activations needs total_steps or n_tokens (the LR schedule needs a length)")


def _peek_tokens(
    activations: torch.Tensor | Iterable[torch.Tensor], n_tokens: int
) -> tuple[torch.Tensor, torch.Tensor | Iterable[torch.Tensor]]:
    """First ``n_tokens`` rows ``[<=n_tokens, ...]`` and the activations to train on, none lost."""
    if isinstance(activations, torch.Tensor):
        return activations[:n_tokens], activations
    stream = iter(activations)
    head: list[torch.Tensor] = []
    while sum(len(b) for b in head) < n_tokens and (batch := next(stream, None)) is not None:
        head.append(batch)
    if not head:
        raise ValueError("no activations to train on")
    return torch.cat(head)[:n_tokens], itertools.chain(head, stream)


def _norm_scale(sample: torch.Tensor) -> float:
    """Constant s with E[||s·x||²] = d_in over ``sample`` ``[n, d_in]`` (Gao §A.1)."""
    mean_sq = sample.double().pow(2).sum(-1).mean().item()
    return math.sqrt(sample.shape[-1] / mean_sq) if mean_sq > 0 else 1.0


def train_topk_sae(
    activations: torch.Tensor | Iterable[torch.Tensor], cfg: SAETrainConfig, progress: bool = True
) -> tuple[SAE[Any], dict[str, Any]]:
    """Train a TopK SAE on ``[n_tokens, d_in]`` activations (or an iterable of ``[batch, d_in]``).

    Returns the inference ``TopKSAE`` (normalization scale and decoder norms folded in, so it takes raw
    activations) and a log: per-step ``loss`` / ``mse_loss`` / ``aux_loss`` / ``lr`` lists, final
    ``dead_fraction``, ``scaling_factor``, ``steps``, ``n_tokens``, ``seconds``.
    """
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(cfg.seed)
    n_steps = resolve_steps(activations, cfg.batch_size, cfg.total_steps, cfg.n_tokens)
    sample, activations = _peek_tokens(activations, cfg.n_norm_tokens)
    scale = _norm_scale(sample) if cfg.normalize_activations else None
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=cfg.d_in,
            d_sae=cfg.n_latents,
            k=cfg.k,
            aux_loss_coefficient=cfg.aux_k_coef,
            # sae-lens's name for "one constant input scale", applied by the trainer's ActivationScaler.
            normalize_activations="expected_average_only_in" if scale is not None else "none",
            device=cfg.device,
        )
    )
    with torch.no_grad():  # Gao §2.1 initializes b_pre at the geometric median; the mean is close enough.
        sae.b_dec.copy_(sample.to(sae.b_dec).mean(0) * (scale or 1.0))
    trainer = _make_trainer(sae, cfg, n_steps, scale)
    batches = iter_batches(activations, cfg.batch_size, n_steps, cfg.seed)
    log = _drive(trainer, batches, n_steps, progress)
    trainer.set_final_sae_metadata()
    log.update(dead_fraction=trainer.dead_neurons.float().mean().item(), scaling_factor=scale or 1.0)
    return to_inference_sae(sae, scale), log


def _make_trainer(sae: TrainingSAE[Any], cfg: SAETrainConfig, n_steps: int, scale: float | None) -> SAETrainer:
    """sae-lens's trainer (Adam, grad-clip 1.0, dead-latent tracking) with our schedule and scale."""
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        device=cfg.device,
        dead_feature_window=cfg.dead_window_steps(cfg.batch_size),
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    # One schedule for every SAE we train: replace sae-lens's (equivalent-shaped) scheduler by ours.
    schedule = partial(lr_lambda, total=n_steps, warmup=cfg.warmup_frac, decay=cfg.decay_frac)
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, schedule)
    trainer.activation_scaler.scaling_factor = scale  # step() multiplies each raw batch by it
    return trainer


def _drive(trainer: SAETrainer, batches: Iterator[torch.Tensor], n_steps: int, progress: bool) -> dict[str, Any]:
    """Run ``trainer.step`` over ``batches`` (the body of ``SAETrainer.fit`` without wandb)."""
    log: dict[str, Any] = {"loss": [], "mse_loss": [], "aux_loss": [], "lr": []}
    start, n_tokens = time.perf_counter(), 0
    with tqdm(total=n_steps, desc="train TopK SAE", disable=not progress) as bar:
        for batch in batches:
            log["lr"].append(trainer.optimizer.param_groups[0]["lr"])
            out = trainer.step(batch)
            trainer.n_training_steps += 1  # step() leaves this to its caller
            n_tokens += batch.shape[0]
            log["loss"].append(out.loss.item())
            log["mse_loss"].append(out.losses["mse_loss"].item())
            log["aux_loss"].append(out.losses["auxiliary_reconstruction_loss"].item())
            bar.update()
            bar.set_postfix(mse=f"{log['mse_loss'][-1]:.4g}", refresh=False)
    log.update(steps=len(log["loss"]), n_tokens=n_tokens, seconds=time.perf_counter() - start)
    return log


@torch.no_grad()
def to_inference_sae(sae: TrainingSAE[Any], scaling_factor: float | None = None) -> SAE[Any]:
    """The inference SAE (e.g. ``TopKSAE``) for a training SAE, which is left untouched.

    Exactly what sae-lens does at the end of ``SAETrainer.fit`` and in ``save_inference_model``: fold the
    input scale ``s`` into the weights (W_enc·s, W_dec/s, b_dec/s, so ``encode`` takes raw activations
    and its latents are the training latents / s) and fold decoder norms into the encoder.
    """
    from sae_lens import SAE

    folded = copy.deepcopy(sae)
    if scaling_factor is not None:
        folded.fold_activation_norm_scaling_factor(scaling_factor)
    state = folded.state_dict()
    folded.process_state_dict_for_saving_inference(state)
    inference = SAE.from_dict(folded.cfg.get_inference_sae_cfg_dict())
    inference.load_state_dict(state)
    return inference.eval()


def save_sae(sae: SAE[Any], path: str | Path) -> Path:
    """Write ``sae`` to folder ``path`` in sae-lens's format; a training SAE is saved as its inference SAE."""
    from sae_lens import TrainingSAE

    if isinstance(sae, TrainingSAE):
        sae.save_inference_model(path)
    else:
        sae.save_model(path)
    return Path(path)


def load_sae(path: str | Path, device: str = "cpu") -> SAE[Any]:
    """Load an SAE saved by :func:`save_sae` (or by sae-lens) from folder ``path``."""
    from sae_lens import SAE

    return SAE.load_from_disk(path, device=device).eval()


def load_pretrained(release: str, sae_id: str, device: str = "cpu") -> SAE[Any]:
    """A pretrained SAE: sae-lens ``release`` / ``sae_id`` from the Hugging Face hub (e.g.
    ``"gemma-scope-2b-pt-res-canonical"``, ``"layer_12/width_16k/canonical"``), or, when ``release`` is a
    local folder, the sae-lens SAE saved in ``release/sae_id`` (``sae_id`` may be ``""``)."""
    from sae_lens import SAE

    local = Path(release) / sae_id
    if Path(release).is_dir():
        return load_sae(local, device)
    return SAE.from_pretrained(release, sae_id, device=device).eval()


@torch.no_grad()
def evaluate_sae(sae: SAE[Any], acts: torch.Tensor, chunk: int = 8192) -> dict[str, float]:
    """Reconstruction metrics of ``sae`` on ``acts`` ``[n, d_in]``.

    ``nmse`` = Σ||x − x̂||² / Σ||x − x̄||² (error over the variance of the data), ``explained_variance``
    = 1 − nmse (sae-lens's definition), ``l0`` = mean active latents per token, ``dead_fraction`` =
    latents that never fire on ``acts``.
    """
    mean = acts.double().mean(0)
    err = var = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=acts.device)
    for x in acts.split(chunk):
        latents = sae.encode(x)
        x_hat = sae.decode(latents).to(x.dtype)
        err += (x - x_hat).double().pow(2).sum().item()
        var += (x.double() - mean).pow(2).sum().item()
        l0 += (latents != 0).sum().item()
        fired |= (latents != 0).any(0)
    nmse = err / var if var > 0 else float("inf")
    return {
        "nmse": nmse,
        "explained_variance": 1.0 - nmse,
        "l0": l0 / acts.shape[0],
        "dead_fraction": 1.0 - fired.float().mean().item(),
    }


@torch.no_grad()
def downstream_kl(
    model: Any,
    tokenizer: Any,
    sae_or_reconstruct_fn: ReconstructFn,
    layer: int,
    texts: list[str],
    max_tokens: int = 128,
) -> float:
    """Mean per-token KL(p_orig ‖ p_spliced) of the next-token distribution of a Llama-style causal LM.

    The output of decoder block ``layer`` (0-based, = HF ``hidden_states[layer + 1]``) is replaced by
    ``sae_or_reconstruct_fn(hidden)`` (an SAE reconstructs with ``decode(encode(h))``); each text is cut
    to ``max_tokens`` tokens. Passing ``torch.zeros_like`` gives the zero-ablation reference.
    """
    block = model.model.layers[layer]
    total, n_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        ids = ids.to(model.device)
        log_p = F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        handle = block.register_forward_hook(partial(_splice_hook, sae_or_reconstruct_fn))
        try:
            log_q = F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
        finally:
            handle.remove()
        total += (log_p.exp() * (log_p - log_q)).sum().item()  # Σ_tokens Σ_v p (log p − log q)
        n_tokens += ids.numel()
    return total / max(n_tokens, 1)


def _splice_hook(fn: ReconstructFn, _module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
    """Forward hook: swap a decoder layer's hidden-state output ``[batch, seq, d]`` for ``fn`` of it."""
    hidden = output[0] if isinstance(output, tuple) else output
    spliced = fn(hidden).to(hidden.dtype)
    return (spliced, *output[1:]) if isinstance(output, tuple) else spliced

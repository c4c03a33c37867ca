"""RouteSAE: one shared TopK SAE fed, per token, by a learned choice among several layers.

In:  residual activations of L routed layers per token, ``[batch, L, d]`` (``RouteSAE.layers`` names the
     backbone layers, in ``sae.py``'s convention: layer ℓ = output of decoder block ℓ).
Out: :class:`RouteSAEOutput` (latents ``[batch, d_sae]``, the routed input, the chosen layer, router
     probabilities, the reconstruction); :func:`train_routesae`; a saved directory
     (:func:`save_routesae` / :func:`load_routesae`); metrics (:func:`evaluate_routesae`).

Implements Shi et al. 2025, "Route Sparse Autoencoder to Interpret Large Language Models"
(arXiv 2503.08200), checked against the authors' code (github.com/swei2001/RouteSAEs). Where the two
differ in detail we follow the code, and say so:

* Each layer's activation is standardized per token, (x − mean) / (std + ε), before routing
  (``pre_process`` in the authors' code); ``normalize="none"`` turns that off.
* Eq. 12 is a reconstruction loss on x_route. The code minimizes the per-token normalized MSE
  ||x̂ − x_route||² / ||x_route||², which we use: plain MSE would reward the router for lowering p_{i*}
  and so shrinking its own target. The target is not detached, so W_router gets gradient through
  p_{i*} (eq. 9) in both the SAE input and the target, as in the code.
* Decoder directions (the paper's W_dec columns; sae-lens stores W_dec as ``[d_sae, d]``, so our rows)
  are renormalized to unit norm every ``renorm_every`` steps; no AuxK loss by default (the code has none;
  ``aux_k_coef`` > 0 adds Gao et al.'s through sae-lens); no gradient clipping.

The shared SAE is sae-lens's ``TopKTrainingSAE`` while training and its inference ``TopKSAE`` afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from router_models.features.sae import (
    TopKTrainBase,
    iter_batches,
    lr_lambda,
    resolve_steps,
    save_sae,
    to_inference_sae,
)
from router_models.features.sae_inference import load_inference_sae

if TYPE_CHECKING:
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainStepOutput

__all__ = [
    "RouteSAE",
    "RouteSAEConfig",
    "RouteSAEOutput",
    "build_routesae",
    "default_routed_layers",
    "evaluate_routesae",
    "load_routesae",
    "save_routesae",
    "train_routesae",
]

Routing = Literal["hard", "soft"]
Normalize = Literal["layer_norm", "none"]
MANIFEST, ROUTER_WEIGHTS, SAE_DIR = "routesae.json", "router.safetensors", "sae"


def default_routed_layers(n_layers: int) -> list[int]:
    """Layers ¼ to ¾ of the way up a backbone with ``n_layers`` blocks (RouteSAE §4).

    The authors' code routes 1-based block outputs n//4 … 3n//4 (9 of Llama-3.2-1B's 16 layers); in our
    0-based block-output convention that is n//4 − 1 … 3n//4 − 1, clamped to at least layer 0.
    """
    start = max(n_layers // 4 - 1, 0)
    return list(range(start, max(3 * n_layers // 4, start + 1)))


class RouteSAEOutput(NamedTuple):
    """One forward pass of a :class:`RouteSAE` on ``[batch, L, d]``."""

    latents: torch.Tensor  # [batch, d_sae], TopK codes of x_route (eq. 10)
    x_route: torch.Tensor  # [batch, d], the routed SAE input (eq. 9 / appendix C)
    layer: torch.Tensor  # [batch] long, index i* into RouteSAE.layers (eq. 8)
    p: torch.Tensor  # [batch, L], router probabilities (eq. 7)
    reconstruction: torch.Tensor  # [batch, d], x̂ of x_route (eq. 11)


@dataclass(kw_only=True)
class RouteSAEConfig(TopKTrainBase):
    """How to build and train a RouteSAE (defaults after RouteSAE §4); ``d_in`` is each layer's width, and
    the shared fields (learning rate, schedule, steps, dead latents, seed, device) are :class:`TopKTrainBase`'s."""

    layers: list[int]
    """Backbone layers routed over, in the order of the ``L`` axis of the input (see default_routed_layers)."""
    k: int = 64
    """Active latents per token (the paper's sparsity constraint of 64)."""
    aux_k_coef: float = 0.0
    """Weight of Gao et al.'s AuxK dead-latent loss; 0 as in the paper, 1/32 as in Gao et al."""
    routing: Routing = "hard"
    """``hard``: the top layer scaled by its probability (eq. 8–9); ``soft``: Σ_i p_i x_i (appendix C)."""
    normalize: Normalize = "layer_norm"
    """Standardize each layer's activation per token before routing (the authors' ``pre_process``)."""
    renorm_every: int = 10
    """Renormalize decoder directions to unit norm every this many steps (RouteSAE §4: 10)."""


class RouteSAE(nn.Module):
    """Router ``W_router ∈ R^{L×d}`` plus a shared sae-lens TopK SAE; every method takes raw ``[batch, L, d]``."""

    def __init__(
        self, sae: SAE[Any], layers: Sequence[int], routing: Routing = "hard", normalize: Normalize = "layer_norm"
    ) -> None:
        super().__init__()
        if routing not in ("hard", "soft") or normalize not in ("layer_norm", "none"):
            raise ValueError(f"unknown routing {routing!r} or normalize {normalize!r}")
        self.sae = sae
        self.layers = list(layers)
        self.routing: Routing = routing
        self.normalize: Normalize = normalize
        self.router = nn.Linear(sae.cfg.d_in, len(self.layers), bias=False, device=sae.W_dec.device)

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def prepare(self, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Per-token, per-layer standardization of ``[batch, L, d]`` (the authors' ``pre_process``)."""
        x = x.to(self.router.weight.dtype)
        if self.normalize == "none":
            return x
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[batch, L, d]`` → (x_route ``[batch, d]``, chosen layer ``[batch]`` long, p ``[batch, L]``)."""
        x = self.prepare(x)
        logits = self.router(x.sum(dim=1))  # eq. 5 (v = Σ_i x_i) and eq. 6 (W_router v)
        p = torch.softmax(logits, dim=-1)  # eq. 7
        p_top, layer = p.max(dim=-1)  # eq. 8: i* = argmax_i p_i
        if self.routing == "soft":
            x_route = (p.unsqueeze(-1) * x).sum(dim=1)  # appendix C: Σ_i p_i x_i
        else:
            x_route = p_top.unsqueeze(-1) * x[torch.arange(x.shape[0], device=x.device), layer]  # eq. 9
        return x_route, layer, p

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``[batch, d_sae]`` of ``[batch, L, d]`` (eq. 10 on x_route)."""
        return self.sae.encode(self.route(x)[0])

    def forward(self, x: torch.Tensor) -> RouteSAEOutput:
        """Route, encode and decode ``[batch, L, d]`` (eq. 5–11)."""
        x_route, layer, p = self.route(x)
        latents = self.sae.encode(x_route)
        return RouteSAEOutput(latents, x_route, layer, p, self.sae.decode(latents))

    @torch.no_grad()
    def renorm_decoder(self) -> None:
        """Scale each decoder direction (row of sae-lens's ``W_dec [d_sae, d]``) to unit norm."""
        w_dec = self.sae.W_dec
        w_dec.div_(w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def build_routesae(cfg: RouteSAEConfig) -> RouteSAE:
    """An untrained RouteSAE around a sae-lens ``TopKTrainingSAE`` (seeded by ``cfg.seed``)."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(cfg.seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=cfg.d_in,
            d_sae=cfg.n_latents,
            k=cfg.k,
            aux_loss_coefficient=cfg.aux_k_coef,
            # The paper keeps the decoder unit-norm by renormalizing; no implicit rescaling on top.
            rescale_acts_by_decoder_norm=False,
            device=cfg.device,
        )
    )
    sae.mse_loss_fn = _normalized_mse  # eq. 12 as the authors' code computes it (module docstring)
    model = RouteSAE(sae, cfg.layers, cfg.routing, cfg.normalize)
    model.renorm_decoder()
    return model


def _normalized_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element (x̂ − x)² / ||x||², so sae-lens's ``.sum(-1).mean()`` gives mean ||x̂ − x||² / ||x||²."""
    return (pred - target).pow(2) / target.pow(2).sum(-1, keepdim=True).clamp_min(1e-8)


def _train_step(
    model: RouteSAE, x: torch.Tensor, dead: torch.Tensor | None, step: int
) -> tuple[TrainStepOutput, torch.Tensor]:
    """Loss of ``[batch, L, d]`` through sae-lens's ``training_forward_pass`` on x_route, and the layers chosen."""
    from sae_lens.saes.sae import TrainStepInput

    x_route, layer, _ = model.route(x)
    step_input = TrainStepInput(
        sae_in=x_route, coefficients={}, dead_neuron_mask=dead, n_training_steps=step, is_logging_step=False
    )
    return model.sae.training_forward_pass(step_input), layer


def train_routesae(
    acts: torch.Tensor | Iterable[torch.Tensor], cfg: RouteSAEConfig, progress: bool = True
) -> tuple[RouteSAE, dict[str, Any]]:
    """Train a RouteSAE on ``[n_tokens, L, d]`` activations (or an iterable of ``[batch, L, d]``).

    Adam on router and SAE together, :func:`router_models.features.sae.lr_lambda` schedule, decoder renormalized
    every ``cfg.renorm_every`` steps. Returns the model (inference ``TopKSAE`` inside, eval mode) and a
    log: per-step ``loss`` / ``mse_loss`` (normalized) / ``aux_loss`` / ``lr`` lists, ``layer_fraction``
    (share of training tokens routed to each layer), ``dead_fraction``, ``steps``, ``n_tokens``, ``seconds``.
    """
    model = build_routesae(cfg).train()
    n_steps = resolve_steps(acts, cfg.batch_size, cfg.total_steps, cfg.n_tokens)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    schedule = partial(lr_lambda, total=n_steps, warmup=cfg.warmup_frac, decay=cfg.decay_frac)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    since_fired = torch.zeros(model.d_sae, dtype=torch.long, device=cfg.device)  # tokens since last fire
    layer_counts = torch.zeros(len(cfg.layers), dtype=torch.long, device=cfg.device)
    log: dict[str, Any] = {"loss": [], "mse_loss": [], "aux_loss": [], "lr": []}
    start, n_tokens = time.perf_counter(), 0
    batches = iter_batches(acts, cfg.batch_size, n_steps, cfg.seed)
    for step, batch in enumerate(tqdm(batches, total=n_steps, desc="train RouteSAE", disable=not progress)):
        dead = since_fired > cfg.dead_tokens if cfg.aux_k_coef > 0 else None
        out, layer = _train_step(model, batch.to(cfg.device), dead, step)
        log["lr"].append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % cfg.renorm_every == 0:
            model.renorm_decoder()
        with torch.no_grad():
            since_fired += batch.shape[0]
            since_fired[(out.feature_acts != 0).any(dim=0)] = 0
            layer_counts += torch.bincount(layer, minlength=len(cfg.layers))
        n_tokens += batch.shape[0]
        log["loss"].append(out.loss.item())
        log["mse_loss"].append(out.losses["mse_loss"].item())
        log["aux_loss"].append(out.losses["auxiliary_reconstruction_loss"].item())
    model.renorm_decoder()
    model.sae = to_inference_sae(model.sae)  # same weights; rescale is off, so latents are unchanged
    log.update(
        layer_fraction=(layer_counts / layer_counts.sum().clamp_min(1)).tolist(),
        dead_fraction=(since_fired > cfg.dead_tokens).float().mean().item(),
        steps=len(log["loss"]),
        n_tokens=n_tokens,
        seconds=time.perf_counter() - start,
    )
    return model.eval(), log


def save_routesae(model: RouteSAE, path: str | Path) -> Path:
    """Write ``model`` to directory ``path``: ``routesae.json`` + ``router.safetensors`` + ``sae/``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": "routesae",
        "version": 1,
        "layers": model.layers,
        "routing": model.routing,
        "normalize": model.normalize,
        "d_in": model.d_in,
        "n_layers": len(model.layers),
        "d_sae": model.d_sae,
        "k": int(model.sae.cfg.k),
        "sae_lens_version": version("sae-lens"),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    save_file({"weight": model.router.weight.detach().cpu().contiguous()}, str(path / ROUTER_WEIGHTS))
    save_sae(model.sae, path / SAE_DIR)
    return path


def load_routesae(path: str | Path, device: str = "cpu") -> RouteSAE:
    """Load a directory written by :func:`save_routesae`; raises ``ValueError`` naming any mismatch."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    sae = load_inference_sae(path / SAE_DIR, device=device)
    weight = load_file(str(path / ROUTER_WEIGHTS), device=device)["weight"]
    expected = {
        "sae d_in": (int(sae.cfg.d_in), manifest["d_in"]),
        "sae d_sae": (int(sae.cfg.d_sae), manifest["d_sae"]),
        "n_layers": (len(manifest["layers"]), manifest["n_layers"]),
        "router weight shape": (tuple(weight.shape), (manifest["n_layers"], manifest["d_in"])),
    }
    wrong = [f"{name}: found {got}, manifest says {want}" for name, (got, want) in expected.items() if got != want]
    if wrong:
        raise ValueError(f"{path} does not match its {MANIFEST}: " + "; ".join(wrong))
    model = RouteSAE(sae, manifest["layers"], manifest["routing"], manifest["normalize"])
    model.router.load_state_dict({"weight": weight})
    return model.eval()


@torch.no_grad()
def evaluate_routesae(model: RouteSAE, acts: torch.Tensor, chunk: int = 4096) -> dict[str, Any]:
    """Metrics of ``model`` on ``acts`` ``[n, L, d]``, against the routed input x_route.

    ``nmse`` = Σ||x̂ − x_route||² / Σ||x_route − mean||² (as ``evaluate_sae``), ``norm_mse`` = mean over
    tokens of ||x̂ − x_route||² / ||x_route||² (the paper's NormMSE), ``l0``, ``dead_fraction`` (latents
    that never fire on ``acts``), ``layer_fraction`` (share of tokens routed to each of ``layers``).
    """
    err = sq = norm_mse = l0 = 0.0
    total = torch.zeros(model.d_in, dtype=torch.float64, device=acts.device)
    fired = torch.zeros(model.d_sae, dtype=torch.bool, device=acts.device)
    counts = torch.zeros(len(model.layers), dtype=torch.long, device=acts.device)
    for x in acts.split(chunk):
        out = model(x)
        token_err = (out.reconstruction - out.x_route).double().pow(2).sum(-1)
        token_sq = out.x_route.double().pow(2).sum(-1)
        err, sq = err + token_err.sum().item(), sq + token_sq.sum().item()
        norm_mse += (token_err / token_sq.clamp_min(1e-12)).sum().item()
        total += out.x_route.double().sum(0)
        l0 += (out.latents != 0).sum().item()
        fired |= (out.latents != 0).any(0)
        counts += torch.bincount(out.layer, minlength=len(model.layers))
    n = acts.shape[0]
    var = sq - total.pow(2).sum().item() / n  # Σ||x − mean||² = Σ||x||² − n·||mean||²
    return {
        "nmse": err / var if var > 0 else float("inf"),
        "norm_mse": norm_mse / n,
        "l0": l0 / n,
        "dead_fraction": 1.0 - fired.float().mean().item(),
        "layers": list(model.layers),
        "layer_fraction": (counts / max(n, 1)).tolist(),
    }

"""Reading a saved TopK SAE for inference without sae-lens, so that serving does not install it.

In:  an SAE folder in sae-lens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``), as written by
     :func:`router_models.sae.save_sae` (``sae-router train-sae``).
Out: :class:`TopKSAE`, an ``nn.Module`` with sae-lens's ``TopKSAE`` inference interface as far as the
     router uses it: ``cfg.d_in`` / ``cfg.d_sae`` / ``cfg.k``, ``encode(x [n, d_in]) -> [n, d_sae]``,
     ``decode(latents) -> [n, d_in]``, ``W_enc``/``b_enc``/``W_dec``/``b_dec`` (same names, so the same
     weights fingerprint).

The arithmetic is sae-lens 6's ``TopKSAE.encode``/``decode`` step for step (Gao et al. 2024, arXiv
2406.04093, eq. 3; decoder-norm rescaling as sae-lens does it), so the latents are bit-identical
(``tests/test_sae.py`` checks this against sae-lens). Only the configuration the router trains is read here:
architecture ``topk``, no activation normalization, no reshaping; :func:`load_inference_sae` hands any other
SAE to sae-lens (the ``train`` extra).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["TopKSAE", "TopKSAEConfig", "load_inference_sae"]

CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"


@dataclass(frozen=True)
class TopKSAEConfig:
    """The fields of sae-lens's ``cfg.json`` that a TopK SAE's forward pass depends on."""

    d_in: int
    d_sae: int
    k: int
    apply_b_dec_to_input: bool = True
    """Subtract the decoder bias from the input before encoding (sae-lens ``process_sae_in``)."""
    rescale_acts_by_decoder_norm: bool = False
    """Pre-activations are multiplied by ``||W_dec[i]||`` before top-k and latents divided by it in decode."""
    dtype: str = "float32"

    @classmethod
    def supports(cls, cfg: dict[str, Any]) -> bool:
        """True when ``cfg`` (a parsed ``cfg.json``) describes an SAE this module computes exactly."""
        return (
            cfg.get("architecture") == "topk"
            and cfg.get("normalize_activations", "none") == "none"
            and cfg.get("reshape_activations", "none") == "none"
            and cfg.get("dtype", "float32") in ("float32", "torch.float32")
        )


class TopKSAE(nn.Module):
    """Inference TopK SAE: ``encode`` keeps the k largest pre-activations (ReLU'd), ``decode`` maps back."""

    def __init__(self, cfg: TopKSAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def _decoder_norm(self) -> torch.Tensor:
        """``||W_dec[i]||`` per latent, computed once per version of ``W_dec`` (it does not change at inference)."""
        key = (self.W_dec.data_ptr(), self.W_dec._version)
        cached = getattr(self, "_norm_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.W_dec.detach().norm(dim=-1))
            self._norm_cache = cached
        return cached[1]

    @torch.no_grad()
    def _top(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k largest pre-activations ReLU'd, their latent indices, the pre-activation tensor)."""
        sae_in = x.to(self.W_enc.dtype) - self.b_dec * self.cfg.apply_b_dec_to_input
        hidden_pre = sae_in @ self.W_enc + self.b_enc
        if self.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * self._decoder_norm()
        values, indices = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False)
        return values.relu(), indices, hidden_pre

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., d_sae]`` of activations ``x`` ``[..., d_in]``."""
        values, indices, hidden_pre = self._top(x)
        return torch.zeros_like(hidden_pre).scatter_(-1, indices, values)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[..., d_in]`` of latents ``[..., d_sae]``."""
        if self.cfg.rescale_acts_by_decoder_norm:
            latents = latents * (1 / self._decoder_norm())
        return latents @ self.W_dec + self.b_dec

    @torch.no_grad()
    def encode_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(encode(x), decode(encode(x)))`` in one pass, for the request path: the reconstruction reads only
        the k active decoder rows per token instead of a dense ``[tokens, d_sae] @ [d_sae, d_in]`` product. On
        CPU float32 weights it runs in numpy, whose BLAS takes a prompt's few tokens through ``W_enc`` about 2×
        faster than torch here (RESULTS.md §12c); values then agree with ``encode`` / ``decode`` up to float
        rounding (``encode`` stays bit-identical to sae-lens, for training features)."""
        if self.W_enc.device.type != "cpu" or self.W_enc.dtype != torch.float32:
            values, indices, hidden_pre = self._top(x)
            latents = torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
            if self.cfg.rescale_acts_by_decoder_norm:
                values = values / self._decoder_norm()[indices]
            recon = (values.unsqueeze(-2) @ self.W_dec[indices]).squeeze(-2) + self.b_dec
            return latents, recon
        lead, d_in, k = x.shape[:-1], x.shape[-1], self.cfg.k
        xs = x.detach().to(torch.float32).reshape(-1, d_in).numpy()
        w_enc, b_enc, w_dec, b_dec = (p.detach().numpy() for p in (self.W_enc, self.b_enc, self.W_dec, self.b_dec))
        hidden = (xs - b_dec if self.cfg.apply_b_dec_to_input else xs) @ w_enc
        hidden += b_enc
        norm = self._decoder_norm().numpy() if self.cfg.rescale_acts_by_decoder_norm else None
        if norm is not None:
            hidden *= norm
        top = np.argpartition(hidden, -k, axis=-1)[:, -k:]  # the k largest per token, unordered
        values = np.maximum(np.take_along_axis(hidden, top, axis=-1), 0)
        latents = np.zeros_like(hidden)
        np.put_along_axis(latents, top, values, axis=-1)
        if norm is not None:
            values = values / norm[top]
        recon = np.einsum("tk,tkd->td", values, w_dec[top]) + b_dec
        return (
            torch.from_numpy(latents).reshape(*lead, self.cfg.d_sae),
            torch.from_numpy(np.ascontiguousarray(recon, dtype=np.float32)).reshape(*lead, d_in),
        )


def load_inference_sae(path: str | Path, device: str = "cpu") -> Any:
    """The SAE saved in folder ``path``, for encoding: a :class:`TopKSAE` when this module computes it
    exactly, else sae-lens's own loader (needs the ``train`` extra)."""
    from safetensors.torch import load_file

    path = Path(path)
    raw = json.loads((path / CFG_FILE).read_text())
    if not TopKSAEConfig.supports(raw):
        if importlib.util.find_spec("sae_lens") is None:
            raise ImportError(
                f"{path}: a {raw.get('architecture')!r} SAE is read by sae-lens: pip install 'sae-router[train]'"
            )
        from router_models.features.sae import load_sae

        return load_sae(path, device=device)
    cfg = TopKSAEConfig(
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        k=int(raw["k"]),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        rescale_acts_by_decoder_norm=bool(raw.get("rescale_acts_by_decoder_norm", False)),
    )
    sae = TopKSAE(cfg)
    state = load_file(str(path / WEIGHTS_FILE), device="cpu")
    sae.load_state_dict(state, strict=True)  # names and shapes must match exactly
    return sae.to(device).eval()

"""Prompt features: backbone hidden states → SAE latents per token → one sparse vector per prompt.

In:  prompts, a :class:`~router_models.features.backbone.Backbone` and a feature encoder (a single-layer sae-lens SAE
     or a RouteSAE, wrapped by :func:`~router_models.features.encoder.make_encoder`).
Out: :class:`PromptFeatures` per batch of prompts:

- ``sparse`` ``[n, d_sae · len(pooling)]`` (scipy CSR): latents pooled over the prompt's own tokens, one
  block per pooling mode (``max`` then ``mean`` by default);
- ``dense`` ``[n, d_model]``: the mean-pooled hidden state at the encoder's reference layer (the dense
  baseline's input, computed in the same forward pass);
- ``recon_error`` ``[n]``: mean per-token normalized reconstruction error ||x − x̂||² / ||x||², kept as an
  out-of-distribution signal (a prompt unlike the SAE's training text reconstructs badly).

Latent names come from :mod:`router_models.features.labels`; :mod:`router_models.features.cache` keeps
these rows on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import scipy.sparse as sp

    from router_models.features.backbone import Backbone
    from router_models.features.encoder import SAEEncoder

__all__ = ["POOLINGS", "PromptFeatures", "concat_features", "extract_features", "pool_tokens"]

POOLINGS = ("max", "mean")


@dataclass(frozen=True)
class PromptFeatures:
    """Features of n prompts (see module docstring for shapes)."""

    sparse: sp.csr_matrix
    dense: np.ndarray
    recon_error: np.ndarray
    n_tokens: np.ndarray

    def rows(self, index: Any) -> PromptFeatures:
        """The features of the prompts at ``index`` (int array, bool mask or slice)."""
        return PromptFeatures(self.sparse[index], self.dense[index], self.recon_error[index], self.n_tokens[index])

    def dense_sparse(self) -> np.ndarray:
        """The sparse block as a dense float32 array ``[n, d_sae · len(pooling)]``."""
        return np.asarray(self.sparse.toarray(), dtype=np.float32)


def pool_tokens(
    latents: torch.Tensor, prompt_idx: torch.Tensor, n: int, pooling: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool token latents ``[tokens, d_sae]`` into ``[n, d_sae · len(pooling)]`` by prompt index; counts [n]."""
    d = latents.shape[1]
    counts = torch.bincount(prompt_idx, minlength=n).clamp_min(1).unsqueeze(1).float()
    blocks = []
    for mode in pooling:
        out = torch.zeros(n, d, dtype=latents.dtype)
        index = prompt_idx.unsqueeze(1).expand(-1, d)
        if mode == "max":
            out.scatter_reduce_(0, index, latents, reduce="amax", include_self=True)  # latents are ≥ 0
        elif mode == "mean":
            out.index_add_(0, prompt_idx, latents)
            out /= counts
        else:
            raise ValueError(f"unknown pooling {mode!r}; use max or mean")
        blocks.append(out)
    return torch.cat(blocks, dim=1), counts.squeeze(1)


def extract_features(
    backbone: Backbone,
    encoder: SAEEncoder,
    texts: Sequence[str],
    pooling: Sequence[str] = POOLINGS,
    progress: bool = False,
) -> PromptFeatures:
    """Run backbone (stopping after the deepest layer needed) and encoder over ``texts``; input order kept."""
    import scipy.sparse as sp

    layers = sorted({*encoder.layers, encoder.reference_layer})
    pos = {layer: i for i, layer in enumerate(layers)}
    enc_rows = [pos[layer] for layer in encoder.layers]
    n = len(texts)
    blocks: list[sp.csr_matrix] = []
    order: list[np.ndarray] = []
    dense = np.zeros((n, backbone.d_model), dtype=np.float32)
    recon = np.zeros(n, dtype=np.float32)
    n_tok = np.zeros(n, dtype=np.int64)
    for index, states in backbone.batches(texts, tuple(layers), progress):
        keep = states.content_mask.bool()
        local = torch.arange(len(index), device=keep.device)[:, None].expand_as(keep)[keep].cpu()
        acts = states.acts[:, keep].float().cpu()  # [L, tokens, d]
        latents, rec, target = encoder.encode(acts[enc_rows])
        pooled, counts = pool_tokens(latents.float(), local, len(index), pooling)
        err = ((rec - target) ** 2).sum(-1) / (target**2).sum(-1).clamp_min(1e-12)
        recon[index] = (torch.zeros(len(index)).index_add_(0, local, err.float()) / counts).numpy()
        ref = acts[pos[encoder.reference_layer]]
        dense[index] = (torch.zeros(len(index), ref.shape[1]).index_add_(0, local, ref) / counts[:, None]).numpy()
        n_tok[index] = torch.bincount(local, minlength=len(index)).numpy()
        blocks.append(sp.csr_matrix(pooled.numpy().astype(np.float32)))
        order.append(np.asarray(index))
    stacked = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, encoder.d_sae * len(pooling)))
    inverse = np.argsort(np.concatenate(order)) if order else np.zeros(0, dtype=int)
    return PromptFeatures(stacked[inverse], dense, recon, n_tok)


def concat_features(parts: Sequence[PromptFeatures]) -> PromptFeatures:
    """Rows of several feature blocks, in order."""
    import scipy.sparse as sp

    return PromptFeatures(
        sp.vstack([p.sparse for p in parts], format="csr"),
        np.concatenate([p.dense for p in parts]),
        np.concatenate([p.recon_error for p in parts]),
        np.concatenate([p.n_tokens for p in parts]),
    )

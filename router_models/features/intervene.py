"""Deleting SAE latents from a prompt's features: one intervention that every scorer view sees.

In:  one prompt's pooled SAE row ``[d_sae · P]`` (blocks in ``pooling`` order, :mod:`router_models.features.pooling`),
     its dense row ``[d_model]`` (the mean-pooled hidden state at the SAE's layer), sets of latent ids to delete,
     and the SAE's decoder directions ``[d_sae, d_model]`` (:func:`decoder_directions`).
Out: the feature views ``{"sae": CSR [b, d_sae · P], "dense": [b, d_model]}`` of the ``b`` edited copies, the
     mapping a router's scorers read (:meth:`router_models.router.TrainedRouter.feature_views`).

What "delete latent i" means in each view:

- SAE rows: latent i is zeroed in every pooling block (max and mean), as if it had never fired. This is not
  re-encoding an edited hidden state (a TopK SAE would then fire some other latent in its slot); it is the
  counterfactual "this latent is absent" that the explanation names.
- dense row: latent i's decoder contribution is removed from every pooled token. With a linear decoder every
  token's hidden state is h_t = Σ_i z_{t,i} d_i + b_dec + e_t, where d_i = decode(e_i) − decode(0) (``W_dec[i]``,
  divided by ‖W_dec[i]‖ for an SAE trained with ``rescale_acts_by_decoder_norm``, as the default router's is:
  see :class:`~router_models.features.sae_inference.TopKSAE.decode`) and e_t is the reconstruction error. The
  dense row is mean_t h_t over the same content tokens, with the same count, as the latents' ``mean`` block
  (:func:`~router_models.features.pooling.extract_features`), so

      mean_t (h_t − z_{t,i} d_i) = dense − (mean_t z_{t,i}) · d_i = dense − mean_block[i] · d_i,

  which is exact (up to float32 rounding) for a single-layer SAE whose layer is the dense row's reference layer
  (checked against recomputing from hidden states in ``tests/test_intervene.py``). It needs the ``mean``
  pooling block. The default router qualifies: one TopK SAE at layer 15, which is also its dense reference layer;
  pooling ``max`` and ``mean`` over the same tokens for both views (the prompt's own tokens after head/tail
  truncation to 128, without the chat template's wrapper: ``content_mask``); no activation normalization; trained
  with ``rescale_acts_by_decoder_norm``, so d_i = W_dec[i] / ‖W_dec[i]‖ rather than W_dec[i] (both checked on its
  bundled SAE by ``tests/test_intervene.py``). A RouteSAE reconstructs a routed mix of layers, not the reference
  layer's state: there :func:`decoder_directions` gives None and the dense row is left unedited (only the SAE views
  see the deletion; the explanation says so with ``deletion.dense_edited`` false).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from router_models.features.encoder import SAEEncoder

__all__ = ["active_latents", "decoder_directions", "delete_latents"]


def decoder_directions(encoder: SAEEncoder | Any) -> np.ndarray | None:
    """d_i = decode(e_i) − decode(0) for every latent ``[d_sae, d_model]`` (float32), or None when the dense row
    is not this decoder's target (a RouteSAE, or an SAE whose layer is not the reference layer)."""
    if encoder.kind != "sae" or tuple(encoder.layers) != (encoder.reference_layer,):
        return None
    import torch

    module, d_sae = encoder.module, encoder.d_sae
    out = []
    with torch.inference_mode():
        param = next(module.parameters())
        zero = module.decode(torch.zeros(1, d_sae, dtype=param.dtype, device=param.device))
        for start in range(0, d_sae, 1024):  # an identity block at a time: d_sae² floats would be large
            eye = torch.eye(d_sae, dtype=param.dtype, device=param.device)[start : start + 1024]
            out.append((module.decode(eye) - zero).float().cpu().numpy())
    return np.concatenate(out)


def active_latents(sae_row: np.ndarray, d_sae: int) -> np.ndarray:
    """Latent ids that fired on the prompt (non-zero in any pooling block), ascending."""
    blocks = np.asarray(sae_row).reshape(-1, d_sae)
    return np.flatnonzero((blocks != 0).any(axis=0))


def delete_latents(
    sae_row: np.ndarray,
    dense_row: np.ndarray,
    deletions: Sequence[Sequence[int]],
    d_sae: int,
    pooling: Sequence[str],
    decoder: np.ndarray | None,
) -> dict[str, Any]:
    """Views of ``len(deletions)`` copies of one prompt, copy b with the latents ``deletions[b]`` deleted (see
    module docstring). ``decoder`` None leaves the dense row as it is."""
    sae_row = np.asarray(sae_row, dtype=np.float32).ravel()
    dense_row = np.asarray(dense_row, dtype=np.float32).ravel()
    n_blocks = len(pooling)
    rows = np.repeat(sae_row[None, :], len(deletions), axis=0)
    dense = np.repeat(dense_row[None, :], len(deletions), axis=0)
    mean = sae_row[pooling.index("mean") * d_sae : (pooling.index("mean") + 1) * d_sae] if "mean" in pooling else None
    if decoder is not None and mean is None:
        raise ValueError(f"the dense edit needs the mean pooling block; pooling is {tuple(pooling)}")
    for b, latents in enumerate(deletions):
        ids = np.asarray(latents, dtype=np.int64)
        if ids.size == 0:
            continue
        rows[b, (ids[None, :] + d_sae * np.arange(n_blocks)[:, None]).ravel()] = 0.0
        if decoder is not None and mean is not None:
            dense[b] -= mean[ids] @ decoder[ids]
    return {"sae": sp.csr_matrix(rows), "dense": dense}

"""SAE encoders: per-token activations of some backbone layers in, SAE latents out.

In:  a saved SAE folder (a single-layer sae-lens SAE with ``sae_router.json``, or a RouteSAE folder).
Out: :class:`SAEEncoder`, whose ``encode(acts)`` maps ``[L, tokens, d_model]`` to latents ``[tokens, d_sae]``
     (plus the reconstruction and its target, for the reconstruction error), and a fingerprint of its weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["SAEEncoder", "make_encoder"]


class SAEEncoder:
    """Maps per-token activations of some layers to SAE latents. Wraps an sae-lens SAE or a RouteSAE.

    ``encode(acts)``: acts ``[L, tokens, d_model]`` (the encoder's ``layers``, in order) →
    (latents ``[tokens, d_sae]``, reconstruction ``[tokens, d]``, target ``[tokens, d]``).
    """

    def __init__(self, module: Any, layers: Sequence[int], kind: str, reference_layer: int, fingerprint: str):
        self.module, self.layers, self.kind = module, tuple(layers), kind
        self.reference_layer, self.fingerprint = reference_layer, fingerprint
        self.d_sae = int(module.cfg.d_sae if kind == "sae" else module.d_sae)

    @torch.inference_mode()
    def encode(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "sae":
            x = acts[0].float()
            if hasattr(self.module, "encode_decode"):  # the inference TopK SAE: sparse reconstruction
                latents, recon = self.module.encode_decode(x)
                return latents, recon, x
            latents = self.module.encode(x)
            return latents, self.module.decode(latents), x
        out = self.module(acts.permute(1, 0, 2).float())  # RouteSAE takes [tokens, L, d]
        return out.latents, out.reconstruction, out.x_route


def _weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def make_encoder(path: str | Path, device: str = "cpu") -> SAEEncoder:
    """Load a saved single-layer SAE (folder with ``sae_router.json`` naming its layer) or RouteSAE folder."""
    path = Path(path)
    if (path / "routesae.json").exists():
        from router_models.features.routesae import load_routesae

        model = load_routesae(path, device=device).eval()
        layers = list(model.layers)
        return SAEEncoder(model, layers, "routesae", layers[len(layers) // 2], _weights_fingerprint(model))
    from router_models.features.sae_inference import load_inference_sae

    meta_file = path / "sae_router.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: no sae_router.json (layer metadata) and no routesae.json")
    layer = int(json.loads(meta_file.read_text())["layer"])
    sae = load_inference_sae(path, device=device)
    return SAEEncoder(sae, [layer], "sae", layer, _weights_fingerprint(sae))

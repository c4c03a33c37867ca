"""Prompt features: backbone hidden states → SAE latents per token → one sparse vector per prompt.

In:  prompts, a :class:`~router_models.backbone.Backbone` and a feature encoder (a single-layer sae-lens SAE
     or a RouteSAE, wrapped by :func:`make_encoder`).
Out: :class:`PromptFeatures` per batch of prompts:

- ``sparse`` ``[n, d_sae · len(pooling)]`` (scipy CSR): latents pooled over the prompt's own tokens, one
  block per pooling mode (``max`` then ``mean`` by default);
- ``dense`` ``[n, d_model]``: the mean-pooled hidden state at the encoder's reference layer (the dense
  baseline's input, computed in the same forward pass);
- ``recon_error`` ``[n]``: mean per-token normalized reconstruction error ||x − x̂||² / ||x||², kept as an
  out-of-distribution signal (a prompt unlike the SAE's training text reconstructs badly).

:func:`label_features` names latents: for each, its top-activating tokens with context from a corpus and,
where the corpus has task labels, the tasks it is most associated with (JSON, so explanations can cite
them). :class:`FeatureCache` keeps per-prompt rows on disk keyed by (backbone, encoder weights, pooling)
and text hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import scipy.sparse as sp

    from router_models.backbone import Backbone

__all__ = [
    "FeatureCache",
    "PromptFeatures",
    "SAEEncoder",
    "extract_features",
    "label_features",
    "make_encoder",
]

POOLINGS = ("max", "mean")


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
        from router_models.routesae import load_routesae

        model = load_routesae(path, device=device).eval()
        layers = list(model.layers)
        return SAEEncoder(model, layers, "routesae", layers[len(layers) // 2], _weights_fingerprint(model))
    from router_models.sae_inference import load_inference_sae

    meta_file = path / "sae_router.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: no sae_router.json (layer metadata) and no routesae.json")
    layer = int(json.loads(meta_file.read_text())["layer"])
    sae = load_inference_sae(path, device=device)
    return SAEEncoder(sae, [layer], "sae", layer, _weights_fingerprint(sae))


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


def _pool_batch(
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
        pooled, counts = _pool_batch(latents.float(), local, len(index), pooling)
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


def _concat(parts: Sequence[PromptFeatures]) -> PromptFeatures:
    """Rows of several feature blocks, in order."""
    import scipy.sparse as sp

    return PromptFeatures(
        sp.vstack([p.sparse for p in parts], format="csr"),
        np.concatenate([p.dense for p in parts]),
        np.concatenate([p.recon_error for p in parts]),
        np.concatenate([p.n_tokens for p in parts]),
    )


class FeatureCache:
    """Per-prompt feature rows on disk, keyed by feature settings and the sha256 of each text.

    Shards are ``.npz`` files of plain arrays (CSR parts, dense rows, errors), read with allow_pickle=False.
    """

    def __init__(self, root: Path, key_fields: Sequence[Any]):
        self.key = hashlib.sha256(json.dumps([str(f) for f in key_fields]).encode()).hexdigest()[:16]
        self.folder = root / "features" / self.key

    def get_or_compute(self, texts: Sequence[str], compute: Any, progress: bool = False) -> PromptFeatures:
        """Features for ``texts``; ``compute(missing_texts) -> PromptFeatures`` fills what is not cached."""
        hashes = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        shards, where = self._load()
        missing = list(dict.fromkeys(h for h in hashes if h not in where))
        if missing:
            first = dict(zip(hashes, texts, strict=True))
            new = compute([first[h] for h in missing])
            self._save(missing, new)
            where |= {h: (len(shards), i) for i, h in enumerate(missing)}
            shards.append(new)
        shard_of = np.array([where[h][0] for h in hashes], dtype=np.int64)
        row_of = np.array([where[h][1] for h in hashes], dtype=np.int64)
        order = np.argsort(shard_of, kind="stable")  # rows grouped by shard, each shard read once
        pieces = [shards[s].rows(row_of[order][shard_of[order] == s]) for s in np.unique(shard_of)]
        return _concat(pieces).rows(np.argsort(order, kind="stable"))

    def _load(self) -> tuple[list[PromptFeatures], dict[bytes, tuple[int, int]]]:
        """Every shard as whole arrays, and hash → (shard number, row)."""
        import scipy.sparse as sp

        shards: list[PromptFeatures] = []
        where: dict[bytes, tuple[int, int]] = {}
        for shard in sorted(self.folder.glob("*.npz")):
            with np.load(shard, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            mat = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(arrays["shape"]))
            feats = PromptFeatures(
                mat,
                arrays["dense"].astype(np.float32),
                arrays["recon"].astype(np.float32),
                arrays["n_tokens"].astype(np.int64),
            )
            # numpy's "S32" drops trailing NUL bytes on read: pad back to the 32-byte digest.
            where |= {bytes(h).ljust(32, b"\0"): (len(shards), i) for i, h in enumerate(arrays["hashes"])}
            shards.append(feats)
        return shards, where

    def _save(self, hashes: list[bytes], f: PromptFeatures) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(b"".join(hashes)).hexdigest()[:16]
        tmp = self.folder / f".{name}.tmp.npz"
        m = f.sparse.tocsr()
        np.savez(
            tmp,
            hashes=np.array(hashes, dtype="S32"),
            data=m.data,
            indices=m.indices,
            indptr=m.indptr,
            shape=np.array(m.shape),
            dense=f.dense,
            recon=f.recon_error,
            n_tokens=f.n_tokens,
        )
        tmp.rename(self.folder / f"{name}.npz")


def label_features(
    backbone: Backbone,
    encoder: SAEEncoder,
    texts: Sequence[str],
    tasks: Sequence[str] | None = None,
    top_n: int = 5,
    context: int = 6,
    progress: bool = False,
) -> dict[str, Any]:
    """Name each latent by its top-activating tokens (with context) and the tasks it is most tied to.

    Returns ``{"latents": {id: {"label", "top_tokens": [...], "tasks": [...], "frequency"}}, ...}``; latents
    that never fire on ``texts`` are listed under ``"dead"``.
    """
    layers = sorted({*encoder.layers})
    n, d = len(texts), encoder.d_sae
    best_val = torch.full((d, top_n), -1.0)
    best_loc = torch.zeros((d, top_n, 2), dtype=torch.long)  # (prompt, position among content tokens)
    pooled = np.zeros((n, d), dtype=np.float32)
    for index, states in backbone.batches(texts, tuple(layers), progress):
        keep = states.content_mask.bool()
        local = torch.arange(len(index))[:, None].expand_as(keep)[keep.cpu()]
        position = (keep.long().cumsum(1) - 1)[keep].cpu()
        latents = encoder.encode(states.acts[:, keep].float().cpu())[0].float()  # [tokens, d]
        pooled[index] = _pool_batch(latents, local, len(index), ("max",))[0].numpy()
        k = min(top_n, latents.shape[0])
        vals, tok = latents.topk(k, dim=0)  # [k, d]
        prompt_ids = torch.as_tensor(index)[local[tok]]
        cand_val = torch.cat([best_val, vals.T], dim=1)
        cand_loc = torch.cat([best_loc, torch.stack([prompt_ids, position[tok]], dim=-1).transpose(0, 1)], dim=1)
        top = cand_val.topk(top_n, dim=1).indices
        best_val = cand_val.gather(1, top)
        best_loc = cand_loc.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    ids_cache: dict[int, list[int]] = {}
    tokenizer = backbone.tokenizer

    def content_ids(p: int) -> list[int]:
        if p not in ids_cache:
            ids_cache[p] = backbone.content_ids([texts[p]])[0]
        return ids_cache[p]

    freq = (pooled > 0).mean(axis=0)
    task_arr = np.asarray(tasks) if tasks is not None else None
    overall = pooled.mean(axis=0) + 1e-9
    out: dict[str, Any] = {}
    dead = []
    for j in range(d):
        if best_val[j, 0] <= 0:
            dead.append(j)
            continue
        tops = []
        for v, (p, t) in zip(best_val[j].tolist(), best_loc[j].tolist(), strict=True):
            if v <= 0:
                continue
            ids = content_ids(p)
            tops.append(
                {
                    "token": tokenizer.decode([ids[t]]),
                    "context": tokenizer.decode(ids[max(0, t - context) : t])
                    + "[["
                    + tokenizer.decode([ids[t]])
                    + "]]"
                    + tokenizer.decode(ids[t + 1 : t + 1 + context // 2]),
                    "activation": round(v, 4),
                    "prompt": p,
                }
            )
        assoc = []
        if task_arr is not None:
            for task in np.unique(task_arr):
                lift = float(pooled[task_arr == task, j].mean() / overall[j])
                assoc.append((lift, str(task)))
            assoc.sort(reverse=True)
        words = list(dict.fromkeys(t["token"].strip() for t in tops if t["token"].strip()))[:3]
        label = "/".join(words) or "(whitespace)"
        if assoc and assoc[0][0] > 1.5:
            label += f" · {assoc[0][1]}"
        out[str(j)] = {
            "label": label,
            "top_tokens": tops,
            "tasks": [{"task": t, "lift": round(lift, 3)} for lift, t in assoc[:3]],
            "frequency": round(float(freq[j]), 4),
        }
    return {"latents": out, "dead": dead, "n_prompts": n}

"""Feature labels: a name for every SAE latent, so explanations can cite them.

In:  a backbone, an SAE encoder and a corpus of prompts (optionally with task labels).
Out: JSON-able ``{"latents": {id: {"label", "top_tokens", "tasks", "frequency"}}, "dead": [...]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from router_models.features.pooling import pool_tokens

if TYPE_CHECKING:
    from router_models.features.backbone import Backbone
    from router_models.features.encoder import SAEEncoder

__all__ = ["label_features"]


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
        pooled[index] = pool_tokens(latents, local, len(index), ("max",))[0].numpy()
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

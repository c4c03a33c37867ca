"""Dense prompt embeddings (pooled backbone hidden states) with an on-disk cache.

In:  texts, a backbone configuration, a layer and a pooling mode.
Out: ``[n, d_model]`` float32 embeddings, in the order of the texts.

The cache lives under ``<cache_root>/embeddings/<key>/`` where the key hashes everything that changes the
vectors (backbone name, layer, pooling, token budget, chat template). Each run that computes something
new writes one ``.npz`` shard of (sha256 of text, vector) pairs; a later run loads the shards' hashes and
only embeds texts it has not seen. Shards hold plain arrays and are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router_models.assets import cache_root
from router_models.features.backbone import Backbone, BackboneConfig

__all__ = ["EmbeddingSpec", "embed_texts", "text_hashes"]


class EmbeddingSpec:
    """What determines a dense embedding: backbone settings, layer and pooling."""

    def __init__(self, backbone: BackboneConfig, layer: int = -1, pooling: str = "mean") -> None:
        self.backbone, self.layer, self.pooling = backbone, layer, pooling

    def key(self) -> str:
        b = self.backbone
        fields = [b.name, b.max_tokens, b.head_tokens, b.chat_template, self.layer, self.pooling]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{Path(self.backbone.name).name}/L{self.layer}/{self.pooling}"


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """sha256 digest per text as fixed-width bytes ``[n]`` (dtype S32)."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype="S32")


def _load_cache(folder: Path) -> dict[bytes, np.ndarray]:
    found: dict[bytes, np.ndarray] = {}
    for shard in sorted(folder.glob("*.npz")):
        with np.load(shard, allow_pickle=False) as data:
            for h, v in zip(data["hashes"], data["vectors"], strict=True):
                found[bytes(h)] = v
    return found


def embed_texts(
    texts: Sequence[str],
    spec: EmbeddingSpec,
    progress: bool = True,
    cache: bool = True,
    backbone: Backbone | None = None,
) -> np.ndarray:
    """Pooled embeddings ``[n, d_model]`` for ``texts``, computing only what the cache lacks."""
    folder = cache_root(spec.backbone.cache) / "embeddings" / spec.key()
    hashes = text_hashes(texts)
    known = _load_cache(folder) if cache else {}
    missing = sorted({bytes(h) for h in hashes} - known.keys())
    if missing:
        first = {bytes(h): t for h, t in zip(hashes, texts, strict=True)}
        todo = [first[h] for h in missing]
        model = backbone or Backbone.load(spec.backbone)
        vectors = model.pooled(todo, spec.layer, pooling=spec.pooling, progress=progress)  # type: ignore[arg-type]
        vectors = np.asarray(vectors, dtype=np.float32)
        if cache:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "spec.json").write_text(json.dumps({"label": spec.label(), "key": spec.key()}))
            shard = hashlib.sha256(b"".join(missing)).hexdigest()[:16]
            tmp = folder / f".{shard}.tmp.npz"
            np.savez(tmp, hashes=np.array(missing, dtype="S32"), vectors=vectors)
            tmp.rename(folder / f"{shard}.npz")
        known.update(zip(missing, vectors, strict=True))
    return np.stack([known[bytes(h)] for h in hashes]).astype(np.float32)

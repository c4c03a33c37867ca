"""The feature cache: per-prompt feature rows on disk, so a backbone pass is paid once per text.

In:  texts and the feature settings (backbone, SAE weights fingerprint, pooling).
Out: :class:`~router_models.features.pooling.PromptFeatures` for the texts, computed only for those not cached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from router_models.features.pooling import PromptFeatures, concat_features

__all__ = ["FeatureCache", "cached_features"]


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
        return concat_features(pieces).rows(np.argsort(order, kind="stable"))

    def _load(self) -> tuple[list[PromptFeatures], dict[bytes, tuple[int, int]]]:
        """Every shard as whole arrays, and hash → (shard number, row)."""

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


def cached_features(
    sae_dir: str | Path,
    texts: Sequence[str],
    max_tokens: int = 128,
    head_tokens: int = 32,
    progress: bool = True,
    cache: str | Path | None = None,
) -> tuple[PromptFeatures, Any, Any]:
    """Features of ``texts`` through the SAE's backbone (cached per text); returns (features, bcfg, encoder)."""
    from router_models.assets import cache_root
    from router_models.features.backbone import Backbone, BackboneConfig
    from router_models.features.encoder import make_encoder
    from router_models.features.pooling import extract_features

    meta = json.loads((Path(sae_dir) / "sae_router.json").read_text())
    bcfg = BackboneConfig(
        name=meta["backbone"]["name"],
        max_tokens=max_tokens,
        head_tokens=head_tokens,
        cache=str(cache) if cache is not None else None,
    )
    encoder = make_encoder(sae_dir)
    key = [bcfg.name, bcfg.max_tokens, bcfg.head_tokens, bcfg.chat_template, encoder.fingerprint, "max,mean"]
    holder: dict[str, Backbone] = {}

    def compute(todo: list[str]) -> PromptFeatures:
        holder.setdefault("bb", Backbone.load(bcfg))
        return extract_features(holder["bb"], encoder, todo, progress=progress)

    return FeatureCache(cache_root(cache), key).get_or_compute(list(texts), compute), bcfg, encoder

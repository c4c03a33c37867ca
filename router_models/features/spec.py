"""The feature spec: how a router's prompt features are computed (backbone, SAE, layers, pooling).

In:  a backbone config and an SAE encoder (training), or a manifest's ``features`` block (loading).
Out: :class:`FeatureSpec`, which the artifact writes to and reads from the manifest, and which the default
     feature function (:class:`router_models.artifact.load.BackboneFeaturizer`) checks the loaded SAE against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router_models.features.backbone import BackboneConfig
    from router_models.features.encoder import SAEEncoder

__all__ = ["SAE_DIR", "FeatureSpec"]

SAE_DIR = "sae"  # the SAE folder inside a router directory


@dataclass(frozen=True)
class FeatureSpec:
    """How prompt features are computed: backbone, SAE and pooling (the manifest's ``features`` block)."""

    backbone: str  # packaged name, folder or hub id (BackboneConfig.name)
    max_tokens: int
    head_tokens: int
    chat_template: bool
    layers: tuple[int, ...]  # layers the SAE reads
    reference_layer: int  # layer of the dense (mean-pooled hidden state) features
    d_sae: int
    d_model: int
    sae_kind: str = "sae"  # "sae" | "routesae"
    fingerprint: str = ""  # SAEEncoder.fingerprint of the SAE weights
    pooling: tuple[str, ...] = ("max", "mean")
    sae_dir: Path | None = None  # where the SAE folder is now (copied into the artifact as sae/)

    @property
    def n_features(self) -> int:
        """Width of the pooled SAE feature row: d_sae per pooling block."""
        return self.d_sae * len(self.pooling)

    @classmethod
    def from_encoder(
        cls,
        cfg: BackboneConfig,
        encoder: SAEEncoder,
        sae_dir: str | Path,
        d_model: int,
        pooling: Sequence[str] = ("max", "mean"),
    ) -> FeatureSpec:
        """The spec of features computed by ``extract_features(Backbone.load(cfg), encoder, ..., pooling)``."""
        return cls(
            backbone=cfg.name,
            max_tokens=cfg.max_tokens,
            head_tokens=cfg.head_tokens,
            chat_template=cfg.chat_template,
            layers=tuple(encoder.layers),
            reference_layer=encoder.reference_layer,
            d_sae=encoder.d_sae,
            d_model=d_model,
            sae_kind=encoder.kind,
            fingerprint=encoder.fingerprint,
            pooling=tuple(pooling),
            sae_dir=Path(sae_dir),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backbone": {
                "name": self.backbone,
                "max_tokens": self.max_tokens,
                "head_tokens": self.head_tokens,
                "chat_template": self.chat_template,
            },
            "layers": list(self.layers),
            "reference_layer": self.reference_layer,
            "pooling": list(self.pooling),
            "sae": {
                "path": f"{SAE_DIR}/" if self.sae_dir is not None else None,
                "kind": self.sae_kind,
                "d_sae": self.d_sae,
                "fingerprint": self.fingerprint,
            },
            "d_model": self.d_model,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], root: Path) -> FeatureSpec:
        b, sae = d["backbone"], d["sae"]
        return cls(
            backbone=b["name"],
            max_tokens=int(b["max_tokens"]),
            head_tokens=int(b["head_tokens"]),
            chat_template=bool(b["chat_template"]),
            layers=tuple(int(x) for x in d["layers"]),
            reference_layer=int(d["reference_layer"]),
            d_sae=int(sae["d_sae"]),
            d_model=int(d["d_model"]),
            sae_kind=sae["kind"],
            fingerprint=sae["fingerprint"],
            pooling=tuple(d["pooling"]),
            sae_dir=root / sae["path"] if sae.get("path") else None,
        )

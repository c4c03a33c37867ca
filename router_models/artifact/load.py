"""Loading a trained router: a router directory in, a :class:`~router_models.router.TrainedRouter` out.

:func:`load_router` checks, in order: the manifest's format version, the sha256 of the weights file, then
everything :mod:`router_models.artifact.validate` checks (model list, widths, every array's shape, library
versions); any mismatch raises :class:`~router_models.artifact.format.ArtifactError`. Scorers are rebuilt
through the registry (``from_state``). The default feature function, :class:`BackboneFeaturizer`, loads the
backbone and SAE the manifest names on first use.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.artifact.format import (
    FORMAT_VERSION,
    MANIFEST,
    SAE_DIR,
    WEIGHTS,
    ArtifactError,
    sub_arrays,
    version_of,
)
from router_models.artifact.validate import check_shapes, check_versions, feature_widths, model_list_diff
from router_models.decide.costs import CostModel, parse_prices
from router_models.features.spec import FeatureSpec
from router_models.router import Featurize, TrainedRouter
from router_models.scorers.registry import scorer_from_state
from router_models.train.calibration import Calibrator

if TYPE_CHECKING:
    from router_models.features.backbone import Backbone, Runtime
    from router_models.features.encoder import SAEEncoder
    from router_models.features.pooling import PromptFeatures

__all__ = ["BackboneFeaturizer", "load_router"]


def load_router(
    path: str | Path,
    *,
    load_backbone: bool = True,
    featurize: Featurize | None = None,
    cache: str | Path | None = None,
    runtime: Runtime = "torch",
) -> TrainedRouter:
    """Read and check a router directory. ``featurize`` overrides the feature function; otherwise with
    ``load_backbone`` the backbone and SAE named by the manifest are loaded on first use (its blocks run by
    ``runtime``: :class:`~router_models.features.backbone.BackboneConfig`), and without it ``score_batch`` is
    unavailable (``predict`` on precomputed features still works)."""
    path = Path(path)
    manifest = _read_manifest(path)
    raw = _read_weights(path, manifest)
    arrays, saved_models = _parse_weights(raw, path / manifest["weights"]["file"])
    models = tuple(m["name"] for m in manifest["models"])
    if saved_models != list(models):
        raise ArtifactError(model_list_diff(list(models), saved_models))
    check_shapes(manifest, arrays)
    check_versions(manifest.get("versions", {}), path)
    spec = FeatureSpec.from_json(manifest["features"], path) if "backbone" in manifest["features"] else None
    labels = _read_labels(path, manifest.get("labels"))
    router = _build(manifest, arrays, models, spec, labels)
    if featurize is not None:
        router.featurize = featurize
    elif load_backbone:
        if spec is None or spec.sae_dir is None or not spec.sae_dir.is_dir():
            raise ArtifactError(
                f"{path}: no {SAE_DIR}/ folder (or no backbone settings) to compute features from; "
                "pass featurize= or load_backbone=False"
            )
        router.featurize = BackboneFeaturizer(spec, cache, runtime)
    router._version = version_of(manifest)
    return router


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST} (not a trained router directory)")
    try:
        manifest: dict[str, Any] = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{file}: format_version {version!r}, but this library reads format {FORMAT_VERSION}")
    return manifest


def _read_labels(path: Path, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    try:
        labels: dict[str, Any] = json.loads((path / name).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path / name}: the manifest names it but it cannot be read ({exc})") from exc
    return labels


def _read_weights(path: Path, manifest: Mapping[str, Any]) -> bytes:
    file = path / manifest["weights"]["file"]
    if not file.is_file():
        raise ArtifactError(f"{path}: missing {file.name}")
    raw = file.read_bytes()
    digest, expected = hashlib.sha256(raw).hexdigest(), manifest["weights"]["sha256"]
    if digest != expected:
        raise ArtifactError(
            f"{file.name}: sha256 {digest[:16]}… does not match the manifest's {str(expected)[:16]}… "
            "(the weights were modified or corrupted after saving)"
        )
    return raw


def _parse_weights(raw: bytes, file: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of the weights file (already read and checksummed as ``raw``) and its header's model list."""
    import safetensors.numpy
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="np") as f:
            meta = f.metadata() or {}
        arrays = safetensors.numpy.load(raw)
    except Exception as exc:  # any parse failure of the file is one error for the caller
        raise ArtifactError(f"{WEIGHTS}: cannot be read as safetensors ({type(exc).__name__}: {exc})") from exc
    return arrays, json.loads(meta.get("models", "[]"))


def _build(
    manifest: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    models: tuple[str, ...],
    spec: FeatureSpec | None,
    labels: dict[str, Any] | None,
) -> TrainedRouter:
    def role(name: str) -> Any:
        block = manifest.get(name)
        return None if block is None else scorer_from_state(block["type"], block["params"], sub_arrays(arrays, name))

    prices = parse_prices({m["name"]: m["price"] for m in manifest["models"] if m.get("price") is not None})
    clusters_block = manifest.get("clusters") or {}
    return TrainedRouter(
        models=models,
        n_base=int(manifest["n_base_models"]),
        scorer=role("scorer"),
        scorer_name=manifest["scorer"]["name"],
        scorer_features=manifest["scorer"]["features"],
        calibrator=Calibrator.from_arrays(manifest["calibration"], sub_arrays(arrays, "calibration")),
        costs=CostModel.from_arrays(models, manifest["costs"], sub_arrays(arrays, "costs")),
        preset_table=copy.deepcopy(manifest["presets"]),
        probe=role("probe"),
        clusters=role("clusters"),
        cluster_features=clusters_block.get("features", "dense"),
        cost_groups=manifest["costs"].get("groups") == "clusters",
        onboarded={m["name"]: m["onboarded"] for m in manifest["models"] if m.get("onboarded")},
        feature_widths={k: int(v) for k, v in feature_widths(manifest).items() if v is not None},
        prices=prices,
        spec=spec,
        labels=labels,
        report=copy.deepcopy(manifest.get("report", {})),
    )


class BackboneFeaturizer:
    """The default feature function: backbone + SAE from the manifest, loaded on first call, checked
    against the manifest (SAE width, layers, fingerprint; backbone width)."""

    def __init__(self, spec: FeatureSpec, cache: str | Path | None = None, runtime: Runtime = "torch") -> None:
        self.spec, self.cache, self.runtime = spec, cache, runtime
        self._loaded: tuple[Backbone, SAEEncoder] | None = None

    @property
    def backbone(self) -> Backbone | None:
        """The loaded backbone (None before the first call)."""
        return None if self._loaded is None else self._loaded[0]

    def __call__(self, texts: Sequence[str]) -> PromptFeatures:
        from router_models.features.pooling import extract_features

        backbone, encoder = self._loaded or self._load()
        return extract_features(backbone, encoder, texts, pooling=self.spec.pooling)

    def _load(self) -> tuple[Backbone, SAEEncoder]:
        from router_models.features.backbone import Backbone, BackboneConfig
        from router_models.features.encoder import make_encoder

        s = self.spec
        assert s.sae_dir is not None
        encoder = make_encoder(s.sae_dir)
        found = {"d_sae": encoder.d_sae, "layers": tuple(encoder.layers), "fingerprint": encoder.fingerprint}
        wanted = {"d_sae": s.d_sae, "layers": s.layers, "fingerprint": s.fingerprint}
        diff = [f"{k} {found[k]} (manifest: {wanted[k]})" for k in found if found[k] != wanted[k]]
        if diff:
            raise ArtifactError(f"{s.sae_dir}: the SAE does not match the manifest: {', '.join(diff)}")
        cfg = BackboneConfig(
            name=s.backbone,
            max_tokens=s.max_tokens,
            head_tokens=s.head_tokens,
            chat_template=s.chat_template,
            cache=str(self.cache) if self.cache else None,
            runtime=self.runtime,
        )
        backbone = Backbone.load(cfg)
        if backbone.d_model != s.d_model:
            raise ArtifactError(f"backbone {s.backbone!r} has d_model {backbone.d_model}, manifest says {s.d_model}")
        self._loaded = (backbone, encoder)
        return self._loaded

"""Checking a router directory before anything is built from it.

In:  the manifest and the arrays of ``weights.safetensors``.
Out: nothing, or an :class:`~router_models.artifact.format.ArtifactError` naming the file, the array and both
     numbers: the model list against the weights' own, the SAE width against the feature width, and every
     array's shape against the model count and feature widths the manifest declares (each scorer kind's
     expected shapes come from :mod:`router_models.scorers.registry`). Library versions that differ in what
     computes features give an :class:`~router_models.artifact.format.ArtifactWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router_models.artifact.format import (
    FEATURE_LIBRARIES,
    MANIFEST,
    WEIGHTS,
    ArtifactError,
    ArtifactWarning,
    library_versions,
    sub_arrays,
)
from router_models.scorers.registry import get_kind

__all__ = ["check_shapes", "check_versions", "feature_widths", "model_list_diff"]


def model_list_diff(manifest_models: list[str], saved: list[str]) -> str:
    missing, extra = [m for m in saved if m not in manifest_models], [m for m in manifest_models if m not in saved]
    detail = []
    if missing:
        detail.append(f"missing from the manifest: {missing}")
    if extra:
        detail.append(f"not in the weights: {extra}")
    if not detail:
        detail.append("same models in a different order")
    return f"{MANIFEST} lists models {manifest_models} but {WEIGHTS} was saved for {saved} ({'; '.join(detail)})"


def check_shapes(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Every array against the model count and feature widths the manifest declares."""
    m, n_base = len(manifest["models"]), int(manifest["n_base_models"])
    feats = manifest["features"]
    widths = feature_widths(manifest)
    sae = feats.get("sae")
    if sae is not None:
        n_pool = len(feats["pooling"])
        if sae["d_sae"] * n_pool != widths["sae"]:
            raise ArtifactError(
                f"{MANIFEST}: SAE width d_sae={sae['d_sae']} × {n_pool} poolings = {sae['d_sae'] * n_pool} "
                f"features, but n_sae_features is {widths['sae']}"
            )
        if feats["d_model"] != widths["dense"]:
            raise ArtifactError(
                f"{MANIFEST}: backbone d_model={feats['d_model']} but n_dense_features is {widths['dense']}"
            )
    for role, n_models in (("scorer", n_base), ("probe", m), ("clusters", m)):
        block = manifest.get(role)
        if block is not None:
            _check_scorer(role, block["type"], block["features"], block["params"], arrays, n_models, widths)
    for name, shape, what in (
        ("calibration.offsets", (m + 1,), f"{m} models + 1"),
        ("calibration.platt", (m, 2), f"{m} models × 2"),
        ("costs.price_in", (m,), f"{m} models"),
        ("costs.price_out", (m,), f"{m} models"),
        ("costs.fixed", (m,), f"{m} models"),
        ("costs.out_tokens", (None, m), f"groups × {m} models"),
    ):
        _expect(arrays, name, shape, what)


def feature_widths(manifest: Mapping[str, Any]) -> dict[str, int | None]:
    feats = manifest["features"]
    return {"sae": feats.get("n_sae_features"), "dense": feats.get("n_dense_features")}


def _check_scorer(
    prefix: str,
    kind: str,
    features: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    m: int,
    widths: Mapping[str, int | None],
) -> None:
    """One scorer role (or blend part) against the shapes its kind declares in the registry."""
    try:
        k = get_kind(kind)
    except KeyError:
        raise ArtifactError(f"{MANIFEST}: {prefix} has unknown scorer type {kind!r}") from None
    if k.shapes is None:
        raise ArtifactError(f"{MANIFEST}: {prefix} has scorer type {kind!r}, which is never saved in a router")
    try:
        for tag, part_kind, part_features, part_params in k.parts(params) if k.parts else ():
            _check_scorer(f"{prefix}.{tag}", part_kind, part_features, part_params, arrays, m, widths)
        expected = k.shapes(params, m, widths.get(features), sub_arrays(arrays, prefix))
    except ValueError as exc:
        raise ArtifactError(f"{MANIFEST}: {prefix} {exc}") from exc
    for name, (shape, what) in expected.items():
        _expect(arrays, f"{prefix}.{name}", shape, what)


def _expect(arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int | None, ...], what: str) -> None:
    if name not in arrays:
        raise ArtifactError(f"{WEIGHTS}: no array {name!r}, which the manifest's scorer needs")
    got = arrays[name].shape
    if len(got) != len(shape) or any(e is not None and g != e for g, e in zip(got, shape, strict=False)):
        raise ArtifactError(f"{WEIGHTS}: {name} has shape {tuple(got)} but manifest says {what}")


def check_versions(saved: Mapping[str, Any], path: Path) -> None:
    now = library_versions()
    diff = [f"{k} {saved.get(k)} → {now[k]}" for k in FEATURE_LIBRARIES if saved.get(k) != now[k]]
    if diff:
        warnings.warn(
            f"{path}: saved with other library versions ({', '.join(diff)}); features may differ: check it with "
            f"`sae-router verify --artifact {path}`",
            ArtifactWarning,
            stacklevel=3,
        )

"""Saving a trained router: a :class:`~router_models.router.TrainedRouter` in, a router directory out.

The layout is in :mod:`router_models.artifact.format`. Every scorer role is written through the scorer
registry (``to_state``); the manifest records the sha256 and shape of every array and is written last, so a
half-written directory never loads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.artifact.format import (
    FORMAT_VERSION,
    LABELS,
    MANIFEST,
    SAE_DIR,
    WEIGHTS,
    jsonable,
    library_versions,
    version_of,
)
from router_models.scorers.registry import scorer_state

if TYPE_CHECKING:
    from router_models.router import TrainedRouter

__all__ = ["save_router", "serialize"]


def serialize(router: TrainedRouter) -> tuple[dict[str, Any], bytes]:
    """(manifest, weights file bytes)."""
    import safetensors.numpy

    arrays: dict[str, np.ndarray] = {}
    roles: dict[str, Any] = {}
    for role, obj, features in (
        ("scorer", router.scorer, router.scorer_features),
        ("probe", router.probe, "sae"),
        ("clusters", router.clusters, router.cluster_features),
    ):
        if obj is None:
            roles[role] = None
            continue
        kind, params, arr = scorer_state(obj)
        roles[role] = {"type": kind, "features": features, "params": params}
        arrays |= {f"{role}.{k}": v for k, v in arr.items()}
    roles["scorer"]["name"] = router.scorer_name
    cal_params, cal_arrays = router.calibrator.to_arrays()
    cost_params, cost_arrays = router.costs.to_arrays()
    arrays |= {f"calibration.{k}": v for k, v in cal_arrays.items()}
    arrays |= {f"costs.{k}": v for k, v in cost_arrays.items()}
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}
    meta = {"format_version": str(FORMAT_VERSION), "models": json.dumps(list(router.models))}
    weights = safetensors.numpy.save(arrays, metadata=meta)
    spec = router.spec
    manifest = {
        "format_version": FORMAT_VERSION,
        "models": [
            {
                "name": m,
                "price": router.prices[m].to_json() if m in router.prices else None,
                "cost_mode": router.costs.mode[j],
                "onboarded": router.onboarded.get(m),
            }
            for j, m in enumerate(router.models)
        ],
        "n_base_models": router.n_base,
        "features": (spec.to_json() if spec else {})
        | {"n_sae_features": router.feature_widths.get("sae"), "n_dense_features": router.feature_widths.get("dense")},
        "labels": LABELS if router.labels is not None else None,
        **roles,
        "calibration": cal_params,
        "costs": cost_params | {"groups": "clusters" if router.cost_groups else None},
        "presets": router.preset_table,
        "report": router.report,
        "versions": library_versions(),
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(weights).hexdigest(),
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
        },
    }
    return jsonable(manifest), weights


def save_router(router: TrainedRouter, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the router directory (see module docstring); returns its path. The manifest is written last."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty (pass overwrite=True to replace it)")
    path.mkdir(parents=True, exist_ok=True)
    manifest, weights = serialize(router)
    spec = router.spec
    if spec is not None and spec.sae_dir is not None and spec.sae_dir.resolve() != (path / SAE_DIR).resolve():
        if not spec.sae_dir.is_dir():
            raise FileNotFoundError(f"SAE folder {spec.sae_dir} does not exist; cannot copy it into {path}")
        shutil.rmtree(path / SAE_DIR, ignore_errors=True)
        shutil.copytree(spec.sae_dir, path / SAE_DIR)
    (path / WEIGHTS).write_bytes(weights)
    if router.labels is not None:
        (path / LABELS).write_text(json.dumps(jsonable(router.labels)))
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.rename(path / MANIFEST)
    router._version = version_of(manifest)
    return path

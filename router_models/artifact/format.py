"""The trained-router directory format: names, version, errors, and the plain-JSON helpers.

On disk (:func:`router_models.artifact.save.save_router`), never pickle::

    router/
      manifest.json        format version, backbone and SAE settings, models and prices, scorer kind and
                           hyperparameters, calibration methods, presets, selection / test metrics,
                           training-data fingerprints, library versions, sha256 and shapes of the weights
      weights.safetensors  every numeric array (probe coef/intercept/mean/scale, cluster centroids/profiles,
                           kNN matrix, isotonic knots, cost tables); header metadata repeats the model list
      labels.json          SAE feature labels (optional)
      sae/                 the SAE the features come from (sae-lens folder or RouteSAE folder)

Scorer arrays are written by each kind's ``to_state`` (:mod:`router_models.scorers.registry`) under the
role's prefix (``scorer.``, ``probe.``, ``clusters.``; a blend's parts under ``scorer.a.``, ``scorer.b.``, …).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router_models.decide.engine import jsonable
from router_models.features.spec import SAE_DIR

__all__ = [
    "FEATURE_LIBRARIES",
    "FORMAT_VERSION",
    "LABELS",
    "LIBRARIES",
    "MANIFEST",
    "SAE_DIR",
    "WEIGHTS",
    "ArtifactError",
    "ArtifactWarning",
    "jsonable",
    "library_versions",
    "sub_arrays",
    "version_of",
]

FORMAT_VERSION = 1
MANIFEST, WEIGHTS, LABELS = "manifest.json", "weights.safetensors", "labels.json"
DEFAULT_ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "default-router"  # the bundled router
# A version change of these can change the features. The SAE is encoded by features/sae_inference.py (our code,
# checked against sae-lens by a parity test), so sae-lens, which serving does not install, is recorded but not
# checked.
FEATURE_LIBRARIES = ("torch", "transformers")
LIBRARIES = (*FEATURE_LIBRARIES, "sae-lens", "scikit-learn", "numpy", "scipy", "safetensors")


class ArtifactError(ValueError):
    """A router directory is missing, corrupted or inconsistent; the message says what differs."""


class ArtifactWarning(UserWarning):
    """A router was saved with other versions of the libraries that compute its features."""


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def version_of(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]


def sub_arrays(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + ".")}

"""Re-check a trained router under the libraries installed now.

In: a router directory. Out: a :class:`CheckResult` — how far the router's predictions and decisions on a
fixed set of prompts moved since they were recorded.

A router's features come from torch, transformers and sae-lens; a new release of any of them can move the
features, and with them every prediction, without any error. So a router directory holds ``check.json``:
a fixed set of prompts, the calibrated quality the router predicted for each model and its choice under each
preset, recorded by the libraries that built it (:func:`record_check`; ``sae-router train`` does this).
:func:`verify_router` recomputes them with the installed libraries and compares. Loading a router under other
library versions warns and names ``sae-router verify``; this is the check that warning asks for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from router_models.router import TrainedRouter

__all__ = ["CHECK", "PROBES", "CheckResult", "Tolerance", "check_prompts", "record_check", "verify_router"]

CHECK = "check.json"
# Prompts unlike any training task, so a check also covers what real traffic sends.
PROBES = (
    "Write a haiku about autumn rain.",
    "Translate 'Where is the train station?' into French and German.",
    "Write a SQL query that returns the ten customers with the highest total order value.",
    "Prove that there are infinitely many prime numbers.",
    "What is 17 * 23?",
    "What does this print? x = [1, 2, 3]; print(x[::-1])",
    "Summarize the causes of the French revolution in three sentences.",
    "Explain the difference between a process and a thread.",
)


@dataclass(frozen=True)
class Tolerance:
    """How far a re-run may drift and still pass."""

    quality: float = 0.02  # max |Δ calibrated quality| over prompts × models
    flips: float = 0.05  # share of (prompt, preset) decisions allowed to change (near-ties can flip)


@dataclass(frozen=True)
class CheckResult:
    """The comparison of a re-run with the recorded check."""

    n_prompts: int
    max_quality_diff: float
    flipped: int  # (prompt, preset) decisions that changed
    decisions: int  # (prompt, preset) decisions compared
    recorded_versions: dict[str, Any]
    versions: dict[str, Any]
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _decisions(router: TrainedRouter, quality: np.ndarray, cost: np.ndarray) -> dict[str, list[str]]:
    """The model chosen for each prompt under each preset, by the served rule (:func:`argmax_utility`)."""
    from router_models.decide.policy import argmax_utility

    return {
        name: [router.models[j] for j in argmax_utility(quality, cost, lam)]
        for name, lam in sorted(router.presets.items())
    }


def _predict(router: TrainedRouter, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if router.featurize is None:
        raise RuntimeError("the router has no feature function: load it with load_backbone=True")
    texts = list(prompts)
    return router.predict(router.featurize(texts), texts)


def check_prompts(data: str | Path, n: int = 32) -> list[str]:
    """``n`` test prompts of a dataset file (picked by a stable hash of prompt_id) followed by :data:`PROBES`."""
    from router_models.data import load_dataset, subsample

    ds = subsample(load_dataset(data), 0, n).split("test")
    return [str(p) for p in ds.prompts] + list(PROBES)


def record_check(router: TrainedRouter, path: str | Path, prompts: Sequence[str]) -> Path:
    """Write ``check.json`` into the router directory ``path`` from the router's predictions now."""
    from router_models.artifact.format import library_versions

    quality, cost = _predict(router, prompts)
    body = {
        "versions": library_versions(),
        "router_version": router.version,
        "models": list(router.models),
        "prompts": list(prompts),
        "quality": np.round(quality, 6).tolist(),
        "decisions": _decisions(router, quality, cost),
    }
    out = Path(path) / CHECK
    out.write_text(json.dumps(body, indent=1) + "\n")
    return out


def verify_router(router: TrainedRouter, path: str | Path, tol: Tolerance | None = None) -> CheckResult:
    """Recompute the recorded check of the router directory ``path`` with the installed libraries."""
    from router_models.artifact.format import ArtifactError, library_versions

    tol = tol or Tolerance()
    file = Path(path) / CHECK
    if not file.is_file():
        raise ArtifactError(f"{file}: no recorded check; write one with `sae-router verify --record`")
    saved = json.loads(file.read_text())
    if saved["models"] != list(router.models):
        raise ArtifactError(f"{file}: recorded for models {saved['models']}, the router has {list(router.models)}")
    quality, cost = _predict(router, saved["prompts"])
    diff = float(np.max(np.abs(quality - np.asarray(saved["quality"])))) if len(quality) else 0.0
    now = _decisions(router, quality, cost)
    pairs = [(a, b) for name, rows in saved["decisions"].items() for a, b in zip(rows, now.get(name, []), strict=False)]
    flipped = sum(a != b for a, b in pairs)
    ok = diff <= tol.quality and flipped <= tol.flips * max(len(pairs), 1)
    return CheckResult(len(saved["prompts"]), diff, flipped, len(pairs), saved["versions"], library_versions(), ok)

"""``task_oracle``: per-task mean score from train. A reference, not a router.

In:  task labels ``[n]`` (which a deployed router never has), scores ``[n, m]``.
Out: quality ``[q, m]``: the mean train score of each model on the prompt's task (its overall mean for an
     unseen task). Never saved in a router (no state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_models.scorers.base import column_means
from router_models.scorers.registry import Preset, ScorerKind

__all__ = ["KIND", "TaskOracle"]


@dataclass
class TaskOracle:
    """Per-task mean score from train (uses the task label: a reference, not a router)."""

    name: str = "task_oracle"
    table: dict[str, np.ndarray] = field(default_factory=dict)
    fallback: np.ndarray | None = None

    def fit(self, X: Any, scores: np.ndarray, val: np.ndarray | None = None) -> TaskOracle:
        tasks = np.asarray(X)
        self.fallback = column_means(scores)
        for task in np.unique(tasks):
            rows = scores[tasks == task]
            counts = (~np.isnan(rows)).sum(axis=0)
            self.table[str(task)] = np.where(counts > 0, np.nansum(rows, axis=0) / np.maximum(counts, 1), np.nan)
        return self

    def predict_quality(self, X: Any) -> np.ndarray:
        assert self.fallback is not None, "fit first"
        rows = [self.table.get(str(t), self.fallback) for t in np.asarray(X)]
        out = np.array(rows, dtype=np.float64)
        return np.where(np.isnan(out), self.fallback, out)


KIND = ScorerKind(
    name="task_oracle",
    cls=TaskOracle,
    features=("task",),
    presets=(
        Preset(
            "task_oracle",
            "task",
            roles=("harness", "baseline"),
            description="per-task mean train score (reads the task label)",
            label="task oracle (uses task label)",
        ),
    ),
)

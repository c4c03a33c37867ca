"""``blend``: a weighted average of several fitted scorers, each reading its own feature kind.

In:  a mapping feature kind → matrix, scores ``[n, m]``.
Out: Σ wᵢ · partᵢ ``[q, m]``. The weights are chosen by :func:`router_models.train.selection.select_scorer`
     (greedy ensemble selection), never fitted here. Saved as its parts' states under the prefixes a., b., …
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router_models.scorers.base import Arrays
from router_models.scorers.registry import ScorerKind, Shapes, scorer_from_state, scorer_state

__all__ = ["KIND", "BlendScorer", "blend_part_tags", "weighted_sum"]


@dataclass
class BlendScorer:
    """Σ wᵢ · partᵢ, each part reading its own feature kind; the weights are given, not fitted here.

    ``X`` is a mapping kind → feature matrix. :func:`router_models.train.selection.select_scorer` chooses the
    weights on cross-fitted predictions (greedy ensemble selection); ``fit`` refits every part on all rows
    with ``val`` as their validation rows.
    """

    parts: tuple[Any, ...]
    kinds: tuple[str, ...]
    weights: tuple[float, ...] = ()
    name: str = "blend"

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.kinds) or len(self.parts) < 1:
            raise ValueError(f"a blend needs one feature kind per part; got {len(self.parts)} and {len(self.kinds)}")
        w = np.asarray(self.weights or [1.0] * len(self.parts), dtype=np.float64)
        if w.shape != (len(self.parts),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"blend weights must be {len(self.parts)} non-negative numbers, not all 0: {self.weights}")
        self.weights = tuple(float(x) for x in w / w.sum())

    def fit(self, X: Mapping[str, Any], scores: np.ndarray, val: np.ndarray | None = None) -> BlendScorer:
        for part, kind in zip(self.parts, self.kinds, strict=True):
            part.fit(X[kind], scores, val)
        return self

    def predict_parts(self, X: Mapping[str, Any]) -> list[np.ndarray]:
        """Every part's predicted quality [n, m], in part order."""
        return [p.predict_quality(X[k]) for p, k in zip(self.parts, self.kinds, strict=True)]

    def predict_quality(self, X: Mapping[str, Any]) -> np.ndarray:
        return weighted_sum(self.weights, self.predict_parts(X))


def weighted_sum(weights: Sequence[float], preds: Sequence[np.ndarray]) -> np.ndarray:
    """Σ wᵢ · predsᵢ (a blend's prediction from its parts' predictions)."""
    return np.asarray(sum((w * q for w, q in zip(weights, preds, strict=True)), np.zeros(())))


def blend_part_tags(n: int) -> list[str]:
    """Array-name prefixes of a blend's parts: a, b, c, …"""
    if n > 26:
        raise ValueError(f"a blend has at most 26 parts, not {n}")
    return [chr(ord("a") + i) for i in range(n)]


def to_state(scorer: BlendScorer) -> tuple[dict[str, Any], Arrays]:
    parts: list[dict[str, Any]] = []
    arrays: Arrays = {}
    for tag, part in zip(blend_part_tags(len(scorer.parts)), scorer.parts, strict=True):
        kind, p, a = scorer_state(part)
        parts.append({"type": kind, "params": p})
        arrays |= {f"{tag}.{k}": v for k, v in a.items()}
    params = {"name": scorer.name, "kinds": list(scorer.kinds), "weights": list(scorer.weights)}
    return params | {"parts": parts}, arrays


def from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> BlendScorer:
    tags = blend_part_tags(len(params["parts"]))
    parts = tuple(
        scorer_from_state(p["type"], p["params"], {k[2:]: v for k, v in arrays.items() if k.startswith(f"{t}.")})
        for t, p in zip(tags, params["parts"], strict=True)
    )
    return BlendScorer(parts, tuple(params["kinds"]), tuple(params["weights"]), name=params["name"])


def parts(params: Mapping[str, Any]) -> list[tuple[str, str, str, Mapping[str, Any]]]:
    """(array prefix, type, feature kind, params) of every part."""
    if len(params["parts"]) != len(params["kinds"]) or len(params["parts"]) != len(params.get("weights", [])):
        raise ValueError(f"lists {len(params['parts'])} parts, kinds or weights unequally")
    tags = blend_part_tags(len(params["parts"]))
    return [(t, p["type"], f, p["params"]) for t, p, f in zip(tags, params["parts"], params["kinds"], strict=True)]


def shapes(params: Mapping[str, Any], m: int, d: int | None, arrays: Mapping[str, np.ndarray]) -> Shapes:
    return {}  # a blend stores no arrays of its own: its parts are checked one by one


KIND = ScorerKind(
    name="blend",
    cls=BlendScorer,
    features=("all",),
    to_state=to_state,
    from_state=from_state,
    shapes=shapes,
    parts=parts,
)

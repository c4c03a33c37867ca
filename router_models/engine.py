"""The contract between a trained router and whatever serves it (the gateway, the CLI).

In:  prompt texts (already reduced to what is routed on: see the gateway's multi-turn rule).
Out: per prompt, predicted quality and cost of every model (:class:`PromptScores`), then for a given λ and
     constraints a :class:`Decision` with the ranking used for fallback and an explanation.

``score_batch`` is the heavy step (backbone → SAE → scorers) and runs off the event loop, batched.
``decide`` is pure and cheap: it wraps :func:`router_models.policy.argmax_utility`, so the gateway serves
exactly the policy that the evaluation harness measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from router_models.policy import TIE_ATOL, argmax_utility

__all__ = ["Constraints", "Decision", "NoEligibleModel", "PromptScores", "RoutingEngine", "decide", "lambda_interval"]


class NoEligibleModel(ValueError):
    """No model satisfies the request's constraints (allowed set, max cost, min quality)."""


@dataclass(frozen=True)
class PromptScores:
    """What a router predicts for one prompt. quality, cost: [m] aligned with the engine's ``models``."""

    quality: np.ndarray
    cost: np.ndarray
    features: np.ndarray | None = None  # [d_features] pooled SAE latents (sparse in content), for explanations
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. {"recon_error": float, "n_tokens": int}


@dataclass(frozen=True)
class Constraints:
    """Per-request limits on the choice."""

    allowed: tuple[str, ...] | None = None  # None = every model the engine serves
    max_cost: float | None = None  # USD per request (predicted)
    min_quality: float | None = None  # predicted quality floor


@dataclass(frozen=True)
class Decision:
    """The routing decision for one prompt."""

    model: str
    lam: float
    ranking: tuple[str, ...]  # eligible models, best utility first: the fallback order
    quality: dict[str, float]
    cost: dict[str, float]
    utility: dict[str, float]
    lambda_interval: tuple[float, float]  # λ range over which ``model`` stays the choice
    explanation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "lambda": self.lam,
            "ranking": list(self.ranking),
            "models": {
                m: {"quality": self.quality[m], "cost": self.cost[m], "utility": self.utility[m]} for m in self.quality
            },
            "lambda_interval": list(self.lambda_interval),
            "explanation": self.explanation,
        }


class RoutingEngine(Protocol):
    """A loaded router. ``models`` are the names its predictions are aligned with."""

    @property
    def version(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...]: ...

    @property
    def presets(self) -> dict[str, float]:  # preset name -> λ; contains "default"
        ...

    def score_batch(self, texts: Sequence[str]) -> list[PromptScores]: ...

    def explain(
        self, scores: PromptScores, chosen: str, runner_up: str | None, lam: float | None = None
    ) -> dict[str, Any]: ...


def lambda_interval(quality: np.ndarray, cost: np.ndarray, chosen: int, eligible: np.ndarray) -> tuple[float, float]:
    """[lo, hi] of λ ≥ 0 over which ``chosen`` keeps the best utility q − λ·c among ``eligible`` models."""
    lo, hi = 0.0, float("inf")
    for j in np.flatnonzero(eligible):
        if j == chosen:
            continue
        dq, dc = quality[chosen] - quality[j], cost[chosen] - cost[j]
        # chosen beats j iff dq − λ·dc ≥ 0
        if dc > 0:
            hi = min(hi, dq / dc)
        elif dc < 0:
            lo = max(lo, dq / dc)
        elif dq < -TIE_ATOL:
            return (float("nan"), float("nan"))
    return (max(lo, 0.0), hi)


def decide(
    models: tuple[str, ...], scores: PromptScores, lam: float, constraints: Constraints | None = None
) -> Decision:
    """argmax(q − λ·c) over the models the constraints leave; ties to the cheaper. Pure."""
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"lambda must be a finite number >= 0, got {lam}")
    c = constraints or Constraints()
    q, cost = np.asarray(scores.quality, dtype=np.float64), np.asarray(scores.cost, dtype=np.float64)
    eligible = np.ones(len(models), dtype=bool)
    if c.allowed is not None:
        unknown = sorted(set(c.allowed) - set(models))
        if unknown:
            raise NoEligibleModel(f"unknown model(s) {unknown}; this router serves {list(models)}")
        eligible &= np.isin(np.array(models), np.array(c.allowed))
    if c.max_cost is not None:
        eligible &= cost <= c.max_cost
    if c.min_quality is not None:
        eligible &= q >= c.min_quality
    if not eligible.any():
        raise NoEligibleModel("no model satisfies the constraints (allowed models, max_cost, min_quality)")
    util = q - lam * cost
    best = int(argmax_utility(q[None, :], cost, lam, eligible[None, :])[0])
    # Fallback order: the choice first, then utility descending, cost ascending on ties.
    rest = sorted((int(j) for j in np.flatnonzero(eligible) if j != best), key=lambda j: (-util[j], cost[j], j))
    order = [best, *rest]
    return Decision(
        model=models[best],
        lam=float(lam),
        ranking=tuple(models[j] for j in order),
        quality={m: float(q[j]) for j, m in enumerate(models)},
        cost={m: float(cost[j]) for j, m in enumerate(models)},
        utility={m: float(util[j]) for j, m in enumerate(models)},
        lambda_interval=lambda_interval(q, cost, best, eligible),
    )

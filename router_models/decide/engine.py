"""The contract between a trained router and whatever serves it (the gateway, the CLI).

In:  prompt texts (already reduced to what is routed on: see the gateway's multi-turn rule).
Out: per prompt, predicted quality and cost of every model (:class:`PromptScores`), then for a given λ and
     constraints a :class:`Decision` with the ranking used for fallback and an explanation.

``score_batch`` is the heavy step (backbone → SAE → scorers) and runs off the event loop, batched.
``decide`` is pure and cheap: it wraps :func:`router_models.decide.policy.argmax_utility`, so the gateway serves
exactly the policy that the evaluation harness measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Protocol

import numpy as np

from router_models.decide.policy import TIE_ATOL, argmax_utility

__all__ = [
    "Constraints",
    "Decision",
    "InvalidLambda",
    "NoEligibleModel",
    "PromptScores",
    "RoutingEngine",
    "UnknownPreset",
    "check_lambda",
    "cite_by_effect",
    "decide",
    "explain_decision",
    "jsonable",
    "lambda_interval",
    "resolve_lambda",
    "runner_up",
]


class NoEligibleModel(ValueError):
    """No model satisfies the request's constraints (allowed set, max cost, min quality)."""


class InvalidLambda(ValueError):
    """λ is not a finite number ≥ 0."""


class UnknownPreset(ValueError):
    """A preset name the router does not have."""


def check_lambda(lam: float) -> float:
    """``lam`` as a float if it is a finite number ≥ 0; :class:`InvalidLambda` otherwise. The one λ check."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise InvalidLambda(f"lambda must be a finite number >= 0, got {lam!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidLambda(f"lambda must be a finite number >= 0, got {lam}")
    return value


def resolve_lambda(lam: float | None, preset: str | None, presets: Mapping[str, float]) -> tuple[float, str | None]:
    """(λ, preset name or None): ``lam`` when given (checked), else the named preset's (default "default")."""
    if lam is not None:
        return check_lambda(lam), None
    name = preset or "default"
    if name not in presets:
        raise UnknownPreset(f"unknown preset {name!r}; presets: {sorted(presets)}")
    return float(presets[name]), name


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
            "lambda_interval": jsonable(list(self.lambda_interval)),
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

    def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        """Why ``chosen`` over ``runner_up`` (independent of λ); :func:`explain_decision` completes it."""
        ...


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
    lam = check_lambda(lam)
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


def runner_up(d: Decision) -> str | None:
    """The model the explanation compares the choice with: the next in the fallback ranking."""
    return d.ranking[1] if len(d.ranking) > 1 else None


def explain_decision(pair: Mapping[str, Any], d: Decision) -> dict[str, Any]:
    """The explanation of a decision, as the CLI and the gateway both give it: the engine's chosen-vs-runner-up
    explanation (``pair``, from ``engine.explain(scores, d.model, runner_up(d))``) plus what depends on the
    decision: the utility margin over the runner-up at ``d.lam`` and the λ interval over which the choice holds
    against every eligible model, and the cited latents: those the engine measured (``pair["features"]``),
    ranked by their effect on that utility margin (:func:`cite_by_effect`). Strict JSON values (non-finite
    floats become None)."""
    r = runner_up(d)
    out = dict(pair)
    out.setdefault("runner_up", r)
    out["utility_margin"] = d.utility[d.model] - d.utility[r] if r is not None else None
    out["lambda_interval"] = list(d.lambda_interval)
    if "deletion" in out:
        out["features"] = cite_by_effect(out.get("features") or [], d.lam, int(out["deletion"]["top_n"]))
    return dict(jsonable(out))


def cite_by_effect(features: Sequence[Mapping[str, Any]], lam: float, top_n: int) -> list[dict[str, Any]]:
    """The ``top_n`` latents whose deletion most lowers the utility margin at ``lam``, largest drop first; a
    latent whose deletion does not lower it (Δ ≥ 0) is not cited. Each entry (with its measured
    ``delta_quality_margin`` and ``delta_cost_margin``) gains ``delta_utility_margin`` = Δq − λ·Δc."""
    scored = [dict(f, delta_utility_margin=f["delta_quality_margin"] - lam * f["delta_cost_margin"]) for f in features]
    lowering = [f for f in scored if f["delta_utility_margin"] < 0]
    return sorted(lowering, key=lambda f: f["delta_utility_margin"])[:top_n]


def jsonable(obj: Any) -> Any:
    """numpy → Python, non-finite floats → None, tuples → lists, paths → str, recursively: strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, PurePath):
        return str(obj)
    return obj

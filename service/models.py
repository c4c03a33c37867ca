"""Request and response schemas (``XCreate`` in, ``XPublic`` out) and the JSON form of ``PromptScores``.

Request models are strict (``"stream": "yes"`` is a 422, not True). Chat bodies allow extra fields, which
the gateway forwards untouched from the raw JSON, never from the re-serialized model.
"""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from router_models.decide.engine import PromptScores, jsonable

__all__ = [
    "ChatCompletionCreate",
    "ChatMessage",
    "ExplainCreate",
    "ModelListPublic",
    "ModelPublic",
    "OodPublic",
    "RouteCreate",
    "RoutePublic",
    "ScoreCreate",
    "ScorePublic",
    "UsagePublic",
    "WorkerInfoPublic",
    "jsonable",
    "scores_from_json",
    "scores_to_json",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionCreate(BaseModel):
    """The fields the gateway reads; every other OpenAI field passes through as sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)  # router | router:<preset> | router:<λ> | a backend name
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False


class RouteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    lam: float | None = Field(default=None, alias="lambda", ge=0, allow_inf_nan=False)
    preset: str | None = None
    models: list[str] | None = Field(default=None, min_length=1)  # allowed subset (backend or router names)
    max_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # predicted USD per request
    min_quality: float | None = Field(default=None, allow_inf_nan=False)
    explain: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.lam is not None and self.preset is not None:
            raise ValueError("give `lambda` or `preset`, not both")
        return self


class ModelScoresPublic(BaseModel):
    quality: float | None
    cost: float | None
    utility: float | None


class OodPublic(BaseModel):
    score: float | None  # SAE reconstruction error of the routed text (None: the router reports none)
    threshold: float | None  # routing.ood_threshold
    out_of_distribution: bool
    action: str  # none | flag | cap (λ raised to routing.ood_preset's) | cap-unchanged


class RoutePublic(BaseModel):
    object: Literal["route"] = "route"
    model: str  # backend name to call
    router_model: str  # the router's name for it
    # serialization_alias keeps "lambda" on the wire; `lam` in Python
    lam: float = Field(serialization_alias="lambda")
    preset: str | None
    ranking: list[str]  # fallback order (backend names)
    models: dict[str, ModelScoresPublic]
    lambda_interval: list[float | None]  # [lo, hi]; null = unbounded / undefined
    explanation: dict[str, Any] | None
    router_version: str
    cache: Literal["hit", "miss"]
    routing_ms: float
    routed_chars: int
    truncated: bool
    ood: OodPublic


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sae-router"


class ModelListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


class UsagePublic(BaseModel):
    object: Literal["usage"] = "usage"
    key: str
    requests: int
    tokens_in: int
    tokens_out: int
    estimated_spend_usd: float
    models: dict[str, dict[str, float]]
    store: str  # redis | memory | redis+memory (memory: counted while Redis was unreachable or unset)


class ScoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(min_length=1, max_length=1024)


class ScorePublic(BaseModel):
    version: str
    models: list[str]
    results: list[dict[str, Any]]  # scores_to_json per text


class ExplainCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    scores: dict[str, Any]
    chosen: str
    runner_up: str | None = None


class WorkerInfoPublic(BaseModel):
    version: str
    models: list[str]
    presets: dict[str, float]
    prices: dict[str, dict[str, float | None]] = {}  # the router's training prices, per model
    runtime: str | None = None  # what runs the worker's backbone blocks: "onnx" or "torch"


def scores_to_json(s: PromptScores) -> dict[str, Any]:
    """PromptScores as JSON; features sparse (they are mostly zeros): {size, indices, values}."""
    features = None
    if s.features is not None:
        f = np.asarray(s.features).ravel()
        nz = np.flatnonzero(f)
        features = {"size": int(f.size), "indices": nz.tolist(), "values": f[nz].astype(float).tolist()}
    return {
        "quality": np.asarray(s.quality, dtype=float).tolist(),
        "cost": np.asarray(s.cost, dtype=float).tolist(),
        "features": features,
        "extras": jsonable(s.extras),
    }


def scores_from_json(d: dict[str, Any]) -> PromptScores:
    features = None
    if d.get("features") is not None:
        f = d["features"]
        features = np.zeros(int(f["size"]), dtype=np.float32)
        features[np.asarray(f["indices"], dtype=np.int64)] = np.asarray(f["values"], dtype=np.float32)
    return PromptScores(
        quality=np.asarray(d["quality"], dtype=np.float64),
        cost=np.asarray(d["cost"], dtype=np.float64),
        features=features,
        extras=dict(d.get("extras") or {}),
    )

"""From a request to a routing decision: what text is routed on, which λ, which model.

In:  chat messages (or a bare prompt), a model string or λ/preset, constraints.
Out: a :class:`router_models.decide.engine.Decision` (router model names), whether the scores came from the cache,
     and how long it took.

The multi-turn rule (what the router sees of a conversation):

1. System and developer messages are left out: they are instructions to the model, mostly shared across
   requests, and would drown the user's question.
2. The routed turn is the LAST ``user`` message (its text; text parts of list content joined by newlines,
   images ignored). Assistant or tool messages after it are ignored. No user message at all is a 400.
3. It is prefixed by up to ``routing.context_turns`` messages that come just before it (user, assistant or
   tool), rendered ``"<role>: <text>"`` and joined by blank lines, keeping only the most recent
   ``routing.context_chars`` characters of that prefix. A follow-up like "and in Python?" thus carries what
   it refers to, while long histories cost nothing extra.
4. A routed turn longer than ``routing.max_chars`` is cut to its first ``head_chars`` and last
   ``max_chars − head_chars`` characters (the question is usually at one end of a pasted document).
   Routing never rejects a long prompt; the backend receives the messages unchanged.

Scores are cached under sha256(router version, routed text), so repeated prompts skip the backbone.

Out-of-distribution check: a trained router reports each prompt's SAE reconstruction error
(``extras["recon_error"]``: a prompt unlike the SAE's training text reconstructs badly, and so does one
carrying an adversarial prefix). Above ``routing.ood_threshold`` the prompt is flagged; with
``ood_policy: cap`` it is routed at ``λ >= presets[ood_preset]`` (:func:`ood_lambda`, pure).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from router_models.decide.engine import (
    Constraints,
    Decision,
    InvalidLambda,
    NoEligibleModel,
    PromptScores,
    UnknownPreset,
    check_lambda,
    decide,
    explain_decision,
    resolve_lambda,
    runner_up,
)
from service.core.config import RoutingSettings
from service.core.errors import InvalidRequest, UnknownModel
from service.core.metrics import Metrics
from service.models import ChatMessage, scores_from_json, scores_to_json
from service.store import ScoreCache
from service.worker import Scorer

__all__ = [
    "OodCheck",
    "RouteResult",
    "RoutedText",
    "RouterService",
    "Target",
    "message_text",
    "ood_lambda",
    "parse_target",
    "routed_text",
    "shown",
]

_EXCLUDED_ROLES = ("system", "developer")
_CUT = "\n…\n"


@dataclass(frozen=True)
class RoutedText:
    text: str
    truncated: bool


def message_text(m: ChatMessage) -> str:
    if isinstance(m.content, str):
        return m.content
    if not m.content:
        return ""
    parts = [p.get("text") for p in m.content if p.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _head_tail(text: str, max_chars: int, head_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    return text[:head_chars] + _CUT + text[len(text) - (max_chars - head_chars) :], True


def routed_text(messages: Sequence[ChatMessage], rules: RoutingSettings) -> RoutedText:
    """The text the router scores for a conversation (the multi-turn rule in the module docstring)."""
    turns = [m for m in messages if m.role not in _EXCLUDED_ROLES]
    last = max((i for i, m in enumerate(turns) if m.role == "user"), default=None)
    if last is None:
        raise InvalidRequest("messages has no user message to route on", param="messages")
    prompt, truncated = _head_tail(message_text(turns[last]), rules.max_chars, rules.head_chars)
    before = turns[max(0, last - rules.context_turns) : last] if rules.context_turns else []
    context = "\n\n".join(f"{m.role}: {t}" for m in before if (t := message_text(m)))
    if len(context) > rules.context_chars:
        context, truncated = context[len(context) - rules.context_chars :], True
    return RoutedText(f"{context}\n\n{prompt}" if context else prompt, truncated)


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` asks for: a routed choice with λ, or one backend (pass-through)."""

    backend: str | None = None
    lam: float | None = None
    preset: str | None = None


def parse_lambda(lam: float | None, preset: str | None, presets: dict[str, float]) -> Target:
    try:
        value, name = resolve_lambda(lam, preset, presets)
    except InvalidLambda as exc:
        raise InvalidRequest(str(exc), param="lambda") from None
    except UnknownPreset:
        asked = preset or "default"
        raise UnknownModel(f"unknown preset {shown(asked)}; presets: {sorted(presets)}", param="preset") from None
    return Target(lam=value, preset=name)


def shown(name: str, limit: int = 64) -> str:
    """``repr(name)``, cut to about ``limit`` characters: error bodies name what was asked without echoing
    a 100 KB model name back."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"… ({len(name)} characters)"


def parse_target(model: str, presets: dict[str, float], backend_of_name: dict[str, str]) -> Target:
    """``router`` | ``router:<preset>`` | ``router:<λ>`` | a backend name (or alias, or router model name)."""
    if model == "router":
        return parse_lambda(None, None, presets)
    if model.startswith("router:"):
        arg = model.removeprefix("router:")
        if arg in presets:
            return parse_lambda(None, arg, presets)
        try:
            lam = check_lambda(float(arg))
        except InvalidLambda:
            raise InvalidRequest("router:<λ> needs a finite λ >= 0", param="model") from None
        except ValueError:
            raise UnknownModel(
                f"unknown model {shown(model)}: use router, router:<λ>, or router:<preset> with a preset in "
                f"{sorted(presets)}",
                param="model",
            ) from None
        return Target(lam=lam)
    if model in backend_of_name:
        return Target(backend=backend_of_name[model])
    raise UnknownModel(f"unknown model {shown(model)}; GET /v1/models lists the models served", param="model")


@dataclass(frozen=True)
class OodCheck:
    score: float | None  # the SAE reconstruction error; None when the router reports none
    threshold: float | None
    flagged: bool
    action: str  # "none" | "flag" | "cap" (λ raised) | "cap-unchanged" (λ already at or above the cap)


def ood_lambda(
    lam: float, score: float | None, rules: RoutingSettings, presets: dict[str, float]
) -> tuple[float, OodCheck]:
    """The λ to route at, and the check behind it: raised to the ``ood_preset`` λ for a flagged prompt
    under ``ood_policy: cap``; unchanged otherwise. Pure."""
    threshold = rules.ood_threshold
    flagged = score is not None and threshold is not None and score > threshold
    if not flagged:
        return lam, OodCheck(score, threshold, False, "none")
    cap = presets.get(rules.ood_preset) if rules.ood_policy == "cap" else None
    if cap is None:
        return lam, OodCheck(score, threshold, True, "flag")
    return max(lam, cap), OodCheck(score, threshold, True, "cap" if cap > lam else "cap-unchanged")


@dataclass(frozen=True)
class RouteResult:
    decision: Decision
    cache_hit: bool
    routing_ms: float
    ood: OodCheck


class RouterService:
    """Scores (cached) → OOD check → ``decide`` → optional explanation. The policy itself is router_models'
    pure one."""

    def __init__(self, scorer: Scorer, cache: ScoreCache, metrics: Metrics, rules: RoutingSettings) -> None:
        self.scorer, self.cache, self.metrics, self.rules = scorer, cache, metrics, rules

    async def scores(self, text: str) -> tuple[PromptScores, bool]:
        key = hashlib.sha256(f"{self.scorer.version}\0{text}".encode()).hexdigest()
        cached = await self.cache.get(key)
        self.metrics.cache.labels("hit" if cached is not None else "miss").inc()
        if cached is not None:
            return scores_from_json(cached), True
        scores = await self.scorer.score(text)
        await self.cache.set(key, scores_to_json(scores))
        return scores, False

    async def route(self, text: str, lam: float, constraints: Constraints, *, explain: bool = False) -> RouteResult:
        t0 = time.perf_counter()
        scores, hit = await self.scores(text)
        recon = scores.extras.get("recon_error")
        score = float(recon) if isinstance(recon, int | float) else None
        lam, ood = ood_lambda(lam, score, self.rules, self.scorer.presets)
        if ood.flagged:
            self.metrics.ood.labels(ood.action).inc()
        try:
            decision = decide(self.scorer.models, scores, lam, constraints)
        except NoEligibleModel as exc:
            raise InvalidRequest(str(exc), code="no_eligible_model") from exc
        except InvalidLambda as exc:
            raise InvalidRequest(str(exc), param="lambda") from exc
        if explain:
            decision = replace(decision, explanation=await self._explain(scores, decision))
        elapsed = time.perf_counter() - t0
        self.metrics.routing_seconds.observe(elapsed)
        return RouteResult(decision, hit, elapsed * 1000, ood)

    async def _explain(self, scores: PromptScores, d: Decision) -> dict[str, Any]:
        """The engine's explanation completed by :func:`~router_models.decide.engine.explain_decision`: the same
        path as ``TrainedRouter.decide(..., explain=True)`` (the CLI)."""
        return explain_decision(await self.scorer.explain(scores, d.model, runner_up(d)), d)

"""``POST /route``: the routing decision alone, without calling a backend."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CallerDep, CtxDep, GatewayDep, RouteBody, body_schema
from service.models import ChatMessage, ModelScoresPublic, OodPublic, RouteCreate, RoutePublic, jsonable
from service.routing import parse_lambda, routed_text

router = APIRouter(tags=["routing"])


@router.post("/route", response_model_by_alias=True, openapi_extra=body_schema(RouteCreate))
async def create_route(caller: CallerDep, body: RouteBody, gateway: GatewayDep, ctx: CtxDep) -> RoutePublic:
    req, ready = body.data, await gateway.wait_ready()
    target = parse_lambda(req.lam, req.preset, ready.scorer.presets)
    messages = req.messages or [ChatMessage(role="user", content=req.prompt)]
    routed = routed_text(messages, gateway.settings.routing)
    await gateway.admit(caller)
    assert target.lam is not None
    result = await gateway.decide(
        routed.text, target.lam, req.models, req.max_cost, req.min_quality, explain=req.explain
    )
    d, names = result.decision, ready.catalog.backend_of
    ctx.model, ctx.cache = names[d.model], "hit" if result.cache_hit else "miss"
    scores = {
        names[m]: ModelScoresPublic(**jsonable({"quality": d.quality[m], "cost": d.cost[m], "utility": d.utility[m]}))
        for m in ready.catalog.allowed
    }
    return RoutePublic(
        model=names[d.model],
        router_model=d.model,
        lam=d.lam,
        preset=target.preset,
        ranking=[names[m] for m in d.ranking],
        models=scores,
        lambda_interval=jsonable(list(d.lambda_interval)),
        explanation=d.explanation,
        router_version=ready.scorer.version,
        cache="hit" if result.cache_hit else "miss",
        routing_ms=round(result.routing_ms, 3),
        routed_chars=len(routed.text),
        truncated=routed.truncated,
        ood=OodPublic(
            score=result.ood.score,
            threshold=result.ood.threshold,
            out_of_distribution=result.ood.flagged,
            action=result.ood.action,
        ),
    )

"""``GET /v1/usage``: the calling key's own requests, tokens and estimated spend, by model."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CallerDep, GatewayDep
from service.models import UsagePublic

router = APIRouter(tags=["usage"])


@router.get("/v1/usage")
async def read_usage(caller: CallerDep, gateway: GatewayDep) -> UsagePublic:
    by_model, store = await gateway.usage.totals(caller.name)
    total = {k: sum(m[k] for m in by_model.values()) for k in ("requests", "tokens_in", "tokens_out")}
    return UsagePublic(
        key=caller.name,
        requests=int(total["requests"]),
        tokens_in=int(total["tokens_in"]),
        tokens_out=int(total["tokens_out"]),
        estimated_spend_usd=sum(m["estimated_spend_usd"] for m in by_model.values()),
        models=by_model,
        store=store,
    )

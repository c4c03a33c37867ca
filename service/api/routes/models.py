"""``GET /v1/models``: the router's own names (router, router:<preset>) and every backend, OpenAI list format."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import CallerDep, GatewayDep
from service.models import ModelListPublic, ModelPublic

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(_: CallerDep, gateway: GatewayDep) -> ModelListPublic:
    ready = await gateway.wait_ready()
    ids = ["router", *(f"router:{p}" for p in sorted(ready.scorer.presets)), *ready.catalog.backends]
    return ModelListPublic(data=[ModelPublic(id=i) for i in ids])

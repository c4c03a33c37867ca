"""Liveness, readiness and Prometheus metrics (no auth: for the platform's probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.api.deps import GatewayDep
from service.core.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """200 once the router is loaded and warm (or the remote worker reached); 503 until then."""
    body = gateway.readiness()
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


@router.get("/metrics")
async def metrics(gateway: GatewayDep) -> Response:
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

"""The feature worker as its own HTTP service (``sae-router worker``), so GPU workers scale apart from gateways.

Endpoints: ``GET /v1/info`` (router version, models, presets), ``POST /v1/score`` (``{"texts": [...]}`` →
per text: quality, cost, sparse features, extras), ``POST /v1/explain`` (scores + chosen + runner-up →
the engine's explanation), ``/healthz``, ``/readyz``, ``/metrics``. Texts from concurrent requests (and
from different gateways) share batches through the same :class:`service.worker.BatchingWorker` that a
gateway runs in-process. A gateway uses it when ``worker_url`` is set. It trusts its network: put it on a
private one (it has no client auth).

Run it with ``sae-router worker`` (which calls :func:`serve_worker`); by hand::

    SAE_ROUTER_ARTIFACT=runs/router python -c \\
        "from service.core.config import Settings; import service.worker_app as w; w.serve_worker(Settings())"
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from router_models.decide.engine import RoutingEngine
from service.core.body import json_model
from service.core.config import Settings
from service.core.errors import ConfigError, InvalidRequest, NotReady, install_error_handlers
from service.core.metrics import CONTENT_TYPE_LATEST, Metrics
from service.core.middleware import GatewayMiddleware
from service.core.server import serve_app
from service.models import (
    ExplainCreate,
    ScoreCreate,
    ScorePublic,
    WorkerInfoPublic,
    jsonable,
    scores_from_json,
    scores_to_json,
)
from service.worker import BatchingWorker

__all__ = ["create_worker_app", "serve_worker"]

log = logging.getLogger("sae_router.worker")


def _worker(request: Request) -> BatchingWorker:
    worker: BatchingWorker | None = request.app.state.worker
    if worker is None or not worker.warm:
        raise NotReady("the feature worker is still loading the router")
    return worker


WorkerDep = Annotated[BatchingWorker, Depends(_worker)]
router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    worker: BatchingWorker | None = request.app.state.worker
    ready = worker is not None and worker.warm
    body = {"status": "ready" if ready else "not_ready", "version": worker.version if worker else None}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/info")
async def info(worker: WorkerDep) -> WorkerInfoPublic:
    return WorkerInfoPublic(
        version=worker.version,
        models=list(worker.models),
        presets=worker.presets,
        prices=worker.prices,
        runtime=worker.runtime,
    )


@router.post("/v1/score")
async def score(worker: WorkerDep, body: Annotated[ScoreCreate, Depends(json_model(ScoreCreate))]) -> ScorePublic:
    results = await worker.score_many(body.texts)
    return ScorePublic(version=worker.version, models=list(worker.models), results=[scores_to_json(r) for r in results])


@router.post("/v1/explain")
async def explain(
    worker: WorkerDep, body: Annotated[ExplainCreate, Depends(json_model(ExplainCreate))]
) -> dict[str, Any]:
    try:
        scores = scores_from_json(body.scores)
    except (KeyError, TypeError, ValueError, IndexError):
        raise InvalidRequest("scores: not a serialized PromptScores", param="scores") from None
    out: dict[str, Any] = jsonable(await worker.explain(scores, body.chosen, body.runner_up))
    return out


def create_worker_app(settings: Settings, engine: RoutingEngine | None = None) -> FastAPI:
    metrics = Metrics.create()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = engine
        if loaded is None:
            from service.engine import load_engine

            try:
                loaded = await asyncio.to_thread(load_engine, settings)
            except ConfigError as exc:
                log.error("refusing to start: %s", exc)
                raise
        b = settings.batching
        worker = BatchingWorker(loaded, max_batch=b.max_batch, max_wait_ms=b.max_wait_ms, metrics=metrics)
        try:
            await worker.start()
            app.state.worker = worker
            yield
        finally:
            app.state.worker = None
            await worker.aclose()

    app = FastAPI(title="sae-router feature worker", version="0.1.0", lifespan=lifespan)
    app.state.worker, app.state.metrics = None, metrics
    app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        logger=log,
        request_log=settings.server.request_log,
    )
    return app


def serve_worker(settings: Settings) -> None:
    """Run the feature worker with uvicorn on ``settings.worker_host:settings.worker_port`` (blocks)."""
    serve_app(
        lambda: create_worker_app(settings),
        settings.worker_host,
        settings.worker_port,
        settings.log_level,
        settings.server,
    )

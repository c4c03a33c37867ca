"""The gateway app: ``create_app(settings, engine=None)`` and ``serve(settings)``.

Run it with ``sae-router serve`` (which calls :func:`serve`), or by hand::

    SAE_ROUTER_CONFIG=deploy/config.local.example.yaml python -c \\
        "from service.core.config import Settings; from service.main import serve; serve(Settings())"

Building the app does no I/O; the lifespan loads and warms the router, opens the one upstream
``httpx.AsyncClient`` and the Redis pool, and starts the batching worker (see :mod:`service.gateway`).
Pass ``engine`` to serve an already-built ``RoutingEngine`` (tests do) instead of loading ``artifact``.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from router_models.decide.engine import RoutingEngine
from service.api.main import api_router
from service.core.config import Settings
from service.core.errors import ConfigError, install_error_handlers
from service.core.middleware import GatewayMiddleware
from service.core.server import serve_app
from service.gateway import Gateway

__all__ = ["create_app", "serve"]

log = logging.getLogger("sae_router.gateway")


def create_app(settings: Settings, engine: RoutingEngine | None = None) -> FastAPI:
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await gateway.start(engine)
            # What is loaded by now (the router, torch, the app) lives as long as the process: keep it out of
            # the collector's full passes, which otherwise stall requests for ~0.3 s over ~560k objects.
            gc.collect()
            gc.freeze()
            yield
        except ConfigError as exc:
            log.error("refusing to start: %s", exc)
            raise
        finally:
            await gateway.aclose()
            gc.unfreeze()  # a process serving apps one after another (tests) may collect this one's garbage

    app = FastAPI(title="sae-router gateway", version="0.1.0", lifespan=lifespan)
    app.state.gateway = gateway
    app.state.begin_shutdown = gateway.begin_shutdown  # called by service.core.server when shutdown starts
    app.include_router(api_router)
    install_error_handlers(app)
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=gateway.metrics,
        logger=log,
        request_log=settings.server.request_log,
        guard=gateway.keys.authenticate if settings.auth.protect_meta else None,
    )
    return app


def serve(settings: Settings) -> None:
    """Run the gateway with uvicorn on ``settings.host:settings.port`` (blocks). JSON logs on stderr.

    ``settings.workers`` processes share the port, each with its own app (and router); they share the routing
    cache, rate limits and usage through Redis (``workers > 1`` requires ``redis_url``).
    """
    make_app = functools.partial(create_app, settings)  # picklable: spawned worker processes build their own
    serve_app(make_app, settings.host, settings.port, settings.log_level, settings.server, settings.workers)

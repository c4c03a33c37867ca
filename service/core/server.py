"""Running an app with uvicorn the way both services do: JSON logs, no uvicorn access log.

``serve_app(make_app, host, port, log_level)`` blocks; the gateway (:func:`service.main.serve`) and the feature
worker (:func:`service.worker_app.serve_worker`) both call it. Logging is configured before the app is built,
so start-up lines are JSON too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.core.logging import configure_logging

__all__ = ["serve_app"]


def serve_app(
    make_app: Callable[[], Any], host: str, port: int, log_level: str, graceful_shutdown_s: int | None = None
) -> None:
    """Configure JSON logging, build the app, and run it on ``host:port`` until stopped."""
    import uvicorn

    configure_logging(log_level)
    uvicorn.run(
        make_app(),
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # one JSON line per request comes from GatewayMiddleware
        timeout_graceful_shutdown=graceful_shutdown_s,
    )

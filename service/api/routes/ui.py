"""``/ui``: the router playground, router page and live page (static files), and the two JSON endpoints they read.

The page itself (``service/ui/``: HTML, plain JS modules, CSS; no build step, nothing fetched from elsewhere)
holds no data, so it is served to anyone who can reach the gateway, under a strict Content-Security-Policy.
Everything it shows comes from authenticated calls: ``/route``, ``/v1/chat/completions`` and, below,
``GET /ui/api/router`` (the served artifact: models, prices, presets, training summary, quality–cost curve)
and ``GET /ui/api/live`` (the gateway's own metrics over a recent window). When client keys are configured
the page asks for one and sends it as ``Authorization: Bearer``; errors are OpenAI-style like everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

from service.api.deps import CallerDep, GatewayDep
from service.live import live_window
from service.router_info import router_summary

router = APIRouter(tags=["ui"])

STATIC = Path(__file__).resolve().parents[2] / "ui"
_FILE = re.compile(r"^[a-z][a-z0-9-]*\.(html|js|css|svg)$")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _static(name: str) -> FileResponse:
    path = STATIC / name
    if not _FILE.match(name) or not path.is_file():
        raise HTTPException(404, f"no such file: /ui/{name}" if _FILE.match(name) else "no such file under /ui")
    return FileResponse(path, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=_HEADERS)


@router.get("/ui", include_in_schema=False)
async def ui_index() -> FileResponse:
    """The single page (playground, router, live); open http://127.0.0.1:8080/ui."""
    return _static("index.html")


@router.get("/ui/api/router")
async def ui_router(_: CallerDep, gateway: GatewayDep) -> dict[str, Any]:
    """The served router: models and prices, presets, training data summary, quality–cost curve."""
    return router_summary(gateway.ready)


@router.get("/ui/api/live")
async def ui_live(
    _: CallerDep, gateway: GatewayDep, request: Request, window_s: Annotated[float, Query(ge=10, le=3600)] = 300
) -> dict[str, Any]:
    """Decisions, spend, fallbacks, cache hit rate and latency quantiles over the last ``window_s`` seconds."""
    return live_window(request.app.state, gateway.metrics).summary(window_s)


@router.get("/ui/{name}", include_in_schema=False)
async def ui_file(name: str) -> FileResponse:
    return _static(name)

"""Per-request plumbing as one pure ASGI middleware (no body buffering, streaming-safe).

In:  every HTTP request. Out: the same response with ``x-request-id`` set, and afterwards one JSON log
line plus the ``requests`` metric. On the way it

- accepts the caller's ``x-request-id`` (if short and plain) or makes one, and sets it for log lines;
- refuses bodies over ``max_body_bytes``: at once from ``Content-Length``, or while reading a body sent
  without it (the read raises :class:`PayloadTooLarge`, which the error handlers turn into a 413);
- hands route code a :class:`RequestContext` (``request.state.ctx``) to note the model, key and fallbacks;
- with ``guard`` set (``auth.protect_meta``), asks for a client key on the docs, the OpenAPI schema,
  ``/readyz`` and ``/metrics``;
- turns an exception nothing else handled into a 500 with the OpenAI body *inside* the request: it still
  carries ``x-request-id``, its log line carries the id, and the keep-alive connection stays usable.
  (Starlette's own last-resort handler sits outside this middleware and re-raises, which makes the server
  drop the connection.)

``request_log`` picks the per-request INFO line: ``all``, ``errors`` (status >= 400) or ``off``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import GatewayError, InvalidRequest, PayloadTooLarge, error_body, error_response
from service.core.logging import request_id_var
from service.core.metrics import Metrics

__all__ = ["GatewayMiddleware", "RequestContext"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
META_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/readyz", "/metrics"})


@dataclass
class RequestContext:
    request_id: str
    started: float  # time.perf_counter() at arrival
    key: str | None = None  # the caller's key NAME, never the key
    model: str | None = None  # the backend that answered (or was chosen)
    fallbacks: int = 0
    cache: str | None = None  # hit | miss
    headers: dict[str, str] = field(default_factory=dict)  # x-router-* headers for whatever response goes out

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        logger: logging.Logger,
        request_log: str = "all",
        guard: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.log = logger
        self.request_log = request_log
        self.guard = guard  # raises Unauthorized for a missing/invalid key (KeyRing.authenticate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        ctx = RequestContext(incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex, time.perf_counter())
        scope.setdefault("state", {})["ctx"] = ctx
        token = request_id_var.set(ctx.request_id)
        status, started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                out = MutableHeaders(scope=message)
                out["x-request-id"] = ctx.request_id
                for name, value in ctx.headers.items():
                    if name not in out:
                        out[name] = value
            await send(message)

        try:
            early = self._check_length(headers.get("content-length")) or self._check_key(scope, headers)
            if early is not None:
                await early(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        except Exception as exc:
            self.log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
            if not started:  # else the response is cut short; the server closes that connection
                body = error_body("internal error", "server_error", None, "internal_error")
                await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            self._record(scope, ctx, status)
            request_id_var.reset(token)

    def _check_length(self, value: str | None) -> ASGIApp | None:
        if value is None:
            return None
        if not value.strip().isdigit():
            return error_response(InvalidRequest("invalid Content-Length header", code="invalid_header"))
        if int(value) > self.max_body_bytes:
            return error_response(PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes"))
        return None

    def _check_key(self, scope: Scope, headers: dict[str, str]) -> ASGIApp | None:
        if self.guard is None or scope["path"] not in META_PATHS:
            return None
        try:
            self.guard(headers.get("authorization"))
        except GatewayError as exc:
            return error_response(exc)
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes")
            return message

        return wrapped

    def _record(self, scope: Scope, ctx: RequestContext, status: int) -> None:
        endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.requests.labels(endpoint, ctx.model or "", str(status)).inc()
        if self.request_log == "off" or (self.request_log == "errors" and status < 400):
            return
        if not self.log.isEnabledFor(logging.INFO):
            return
        fields = {
            "method": scope["method"],
            "path": endpoint,
            "status": status,
            "duration_ms": round(ctx.elapsed_ms(), 2),
            "key": ctx.key,
            "model": ctx.model,
            "fallbacks": ctx.fallbacks,
            "cache": ctx.cache,
        }
        fields = {k: v for k, v in fields.items() if (v is not None and v != 0) or k == "status"}
        self.log.info("request", extra={"fields": fields, "request_id": ctx.request_id})

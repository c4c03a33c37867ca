"""The gateway's exceptions, and their one translation into OpenAI-style error bodies.

Every error a client sees has the shape ``{"error": {"message", "type", "param", "code"}}``::

    GatewayError                      500 server_error
    ├── InvalidRequest                400 invalid_request_error (422 for schema violations)
    │   └── UnknownModel              400 code=model_not_found
    ├── Unauthorized                  401 invalid_api_key
    ├── PayloadTooLarge               413
    ├── RateLimited                   429 + retry-after
    ├── NotReady                      503 (engine loading, remote worker unreachable)
    ├── EngineError                   500 (scoring failed)
    └── UpstreamError                 502 upstream unreachable or answered badly
        ├── UpstreamTimeout           504
        └── UpstreamRateLimited       429 (every candidate backend said 429)

``ConfigError`` is separate: it stops start-up and never reaches a client. Messages are written here or by
the raiser and never include request bodies, keys or upstream secrets; unexpected exceptions become a bare
500 whose details go to the log only (written by :class:`service.core.middleware.GatewayMiddleware`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

__all__ = [
    "ConfigError",
    "EngineError",
    "GatewayError",
    "InvalidRequest",
    "NotReady",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UnknownModel",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "error_body",
    "error_response",
    "install_error_handlers",
]


class ConfigError(ValueError):
    """The configuration does not fit the loaded router; raised at start-up."""


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> InvalidRequest:
        """422 naming the first offending field; the offending value is never echoed."""
        first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
        loc = [str(p) for p in first["loc"][len(prefix) :]]
        param = ".".join(loc) or None
        where = f"{param}: " if param else ""
        return cls(f"{where}{first['msg']}", param=param, code="invalid_value", status=422)


class UnknownModel(InvalidRequest):
    code = "model_not_found"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after_s + 0.499)))}


class NotReady(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"


class EngineError(GatewayError):
    code = "routing_failed"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"
    attempts = 0  # failed upstream attempts behind this error


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"

    def __init__(self, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": self.retry_after} if self.retry_after else {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.type, exc.param, exc.code),
        status_code=exc.status,
        headers={**exc.headers(), **(headers or {})},
    )


async def _gateway_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ())]
    param = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc) or None
    return error_response(
        InvalidRequest(
            f"{param}: {first['msg']}" if param else str(first["msg"]), param=param, code="invalid_value", status=422
        )
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse(error_body(message, type_, None, code), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """The one place where our exceptions become HTTP responses (anything else: GatewayMiddleware's bare 500)."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

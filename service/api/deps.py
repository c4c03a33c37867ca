"""Route dependencies as ``Annotated`` aliases: the gateway, the request context, the caller, JSON bodies.

The caller is authenticated before the body is read, so a request without a valid key gets its 401 first.
Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per
dependency per request that cost the proxy path ~8% of its CPU (issue 13); none of these block.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from service.auth import Caller
from service.core.body import Parsed, read_json
from service.core.middleware import RequestContext
from service.gateway import Gateway
from service.models import ChatCompletionCreate, RouteCreate

__all__ = ["CallerDep", "ChatBody", "CtxDep", "GatewayDep", "RouteBody", "body_schema"]

M = TypeVar("M", bound=BaseModel)


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_ctx(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CtxDep = Annotated[RequestContext, Depends(get_ctx)]


async def authenticate(request: Request, gateway: GatewayDep, ctx: CtxDep) -> Caller:
    caller = gateway.keys.authenticate(request.headers.get("authorization"))
    ctx.key = caller.name
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def _authenticated_body(model: type[M]) -> Callable[[Request, Caller], Awaitable[Parsed[M]]]:
    async def parse(request: Request, _: CallerDep) -> Parsed[M]:
        return await read_json(request, model)

    return parse


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a body we parse ourselves (:mod:`service.core.body`), so /docs and the
    OpenAPI schema show it (and schema-driven tests can generate it)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


ChatBody = Annotated[Parsed[ChatCompletionCreate], Depends(_authenticated_body(ChatCompletionCreate))]
RouteBody = Annotated[Parsed[RouteCreate], Depends(_authenticated_body(RouteCreate))]

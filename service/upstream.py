"""Forwarding chat completions to OpenAI-compatible backends, with fallback and streaming pass-through.

In:  the client's JSON body (forwarded untouched except ``model``), candidate backends in order (the
     routing ranking, or one backend for pass-through), ``stream``.
Out: an :class:`UpstreamReply`: the backend that answered, its status and either its JSON (``model``
     renamed to our backend name) or a byte stream of SSE events.

Fallback: a connect error, a timeout, a 429, a 5xx, a 401/403 (*our* key for that backend is wrong or not
allowed: the next backend may take it; logged as an error) or an unusable 2xx (empty stream, a stream that
is not ``text/event-stream`` or whose first events are not SSE ``data:`` lines with JSON, non-JSON body)
on one backend moves on to the next candidate, up to ``fallback.max_attempts`` attempts and within
``fallback.total_timeout_s``, but only before the first byte reaches the client: a streaming reply is
committed once its first chunk has arrived. A stream that breaks later ends with an SSE ``error`` event
(which the OpenAI SDK raises as ``APIError``); it is never retried; so does one that starts sending events
that are not JSON. Other 4xx answers are the caller's to see and are relayed as they are.

One shared ``httpx.AsyncClient`` does all I/O; each backend has a semaphore capping requests in flight.
Waiting for it is bounded by the backend's ``queue_timeout_s`` (reason ``queue``), apart from ``timeout_s``,
which, like the ``upstream_seconds`` metric, counts upstream time only.
On shutdown, :meth:`Upstreams.drain` gives the streams in flight a grace period; a stream still running
after it ends with an SSE ``error`` event (code ``shutting_down``), and its usage is recorded as usual.
A stream's upstream response and semaphore are released by :class:`_StreamGuard`, from the relay's
``finally`` or from the response's background task, whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.catalog import Catalog
from service.core.config import BackendSettings, Settings
from service.core.errors import UpstreamError, UpstreamRateLimited, UpstreamTimeout
from service.core.metrics import Metrics

__all__ = ["BadEvent", "SSERewriter", "StreamStats", "UpstreamReply", "Upstreams"]

log = logging.getLogger("sae_router.upstream")
_PENDING: set[asyncio.Task[None]] = set()  # strong refs to cleanup tasks


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


@dataclass
class StreamStats:
    """What the relay saw of a stream, for usage accounting."""

    usage: dict[str, Any] | None = None  # the upstream's usage object, when it sent one
    content_chars: int = 0  # characters of delta content, to estimate tokens otherwise
    completed: bool = False


class BadEvent(ValueError):
    """The upstream sent something that is not an OpenAI SSE stream."""


_SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")


class SSERewriter:
    """Rewrites ``"model"`` in each ``data:`` event line, holding back only an incomplete last line.

    Raises :class:`BadEvent` on a line that is no SSE field, or a ``data:`` payload that is neither a JSON
    object nor ``[DONE]``: relaying it would make the client's SDK fail on our 200."""

    def __init__(self, model: str, stats: StreamStats) -> None:
        self.model, self.stats, self._rest = model, stats, b""

    def feed(self, chunk: bytes) -> bytes:
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        return b"".join(self._line(line) + b"\n" for line in lines)

    def flush(self) -> bytes:
        rest, self._rest = self._rest, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            if line.strip(b"\r") and not line.startswith(_SSE_FIELDS):
                raise BadEvent("not an SSE line")
            return line
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return line
        try:
            event = json.loads(payload)
        except ValueError:
            raise BadEvent("an SSE data line that is not JSON") from None
        if not isinstance(event, dict):
            raise BadEvent("an SSE data line that is not a JSON object")
        if isinstance(event.get("usage"), dict):
            self.stats.usage = event["usage"]
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
            if isinstance(content, str):
                self.stats.content_chars += len(content)
        if "model" not in event:
            return line
        event["model"] = self.model
        return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class UpstreamReply:
    backend: str
    status: int
    failures: list[tuple[str, str]] = field(default_factory=list)  # (backend, reason) per failed attempt
    body: dict[str, Any] | None = None  # non-streaming JSON
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"
    guard: _StreamGuard | None = None
    upstream_ms: float = 0.0


class _StreamGuard:
    """Releases a stream's semaphore at once and closes its upstream response in a task, exactly once."""

    def __init__(self, response: httpx.Response, release: Callable[[], None]) -> None:
        self.response, self._release = response, release
        self.stats = StreamStats()
        self.on_end: Callable[[], Awaitable[None]] | None = None
        self.limit: asyncio.Timeout | None = None  # the relay's deadline, moved up by Upstreams.drain
        self._task: asyncio.Task[None] | None = None

    def finish(self) -> None:
        if self._task is not None:
            return
        self._release()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # finalized outside the loop (interpreter shutdown): nothing left to close on
            return
        self._task = loop.create_task(self._close())
        _PENDING.add(self._task)
        self._task.add_done_callback(_PENDING.discard)

    async def wait(self) -> None:
        """For the response's BackgroundTask."""
        self.finish()
        if self._task is not None:
            await self._task

    async def _close(self) -> None:
        try:
            await self.response.aclose()
            if self.on_end is not None:
                await self.on_end()
        except Exception as exc:
            log.error("closing an upstream stream failed: %s", type(exc).__name__, exc_info=exc)


class Upstreams:
    def __init__(self, client: httpx.AsyncClient, catalog: Catalog, settings: Settings, metrics: Metrics) -> None:
        self.client, self.catalog, self.settings, self.metrics = client, catalog, settings, metrics
        self._sems = {n: asyncio.Semaphore(b.max_concurrency) for n, b in catalog.backends.items()}
        self._live: set[_StreamGuard] = set()  # streams being relayed
        self._drain_at: float | None = None  # loop time at which streams still running are cut

    def drain(self, grace_s: float) -> None:
        """Shutdown began: streams in flight (and any still starting) end at the latest ``grace_s`` from now."""
        self._drain_at = asyncio.get_running_loop().time() + grace_s
        for guard in list(self._live):
            if guard.limit is not None:
                guard.limit.reschedule(self._drain_at)

    async def forward(
        self, body: dict[str, Any], candidates: Sequence[str], *, stream: bool, request_id: str
    ) -> UpstreamReply:
        fb = self.settings.fallback
        deadline = time.monotonic() + fb.total_timeout_s
        failures: list[tuple[str, str]] = []
        last: _Retryable | None = None
        for name in candidates[: fb.max_attempts]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = last or _Retryable("timeout")
                break
            backend = self.catalog.backends[name]
            try:
                reply = await self._attempt(backend, body, stream, deadline, request_id)
            except _Retryable as exc:
                failures.append((name, exc.reason))
                self.metrics.fallbacks.labels(name, exc.reason).inc()
                log.warning("upstream %s failed (%s)", name, exc.reason, extra={"fields": {"backend": name}})
                last = exc
                continue
            reply.failures = failures
            return reply
        raise _final_error(failures, last)

    async def _attempt(
        self, b: BackendSettings, body: dict[str, Any], stream: bool, deadline: float, request_id: str
    ) -> UpstreamReply:
        missing = self.settings.missing_api_key(b.name)
        if missing is not None:  # missing_api_keys: warn; the next backend in the ranking may have its key
            raise _Retryable(f"no API key: set {missing}")
        await self._acquire(b, deadline)
        timeout = min(b.timeout_s, deadline - time.monotonic())
        t0 = time.perf_counter()
        outcome, response, handed_off = "ok", None, False
        try:
            if timeout <= 0:
                raise TimeoutError
            async with asyncio.timeout(timeout):
                response = await self.client.send(self._request(b, body, timeout, request_id), stream=True)
                reply = await self._read(b, response, stream)
                handed_off = reply.guard is not None
            reply.upstream_ms = (time.perf_counter() - t0) * 1000
            outcome = "ok" if reply.status < 400 else f"{reply.status // 100}xx"
            return reply
        except _Retryable as exc:
            outcome = exc.reason
            raise
        except (TimeoutError, httpx.TimeoutException):
            outcome = "timeout"
            raise _Retryable("timeout") from None
        except httpx.ConnectError:
            outcome = "connect"
            raise _Retryable("connect") from None
        except httpx.HTTPError as exc:
            outcome = "network"
            raise _Retryable("network") from exc
        finally:
            self.metrics.upstream_seconds.labels(b.name, outcome).observe(time.perf_counter() - t0)
            if not handed_off:
                self._sems[b.name].release()
                if response is not None:
                    await response.aclose()

    async def _acquire(self, b: BackendSettings, deadline: float) -> None:
        """One of the backend's concurrency slots, waiting at most ``queue_timeout_s`` (and the deadline)."""
        sem, q0 = self._sems[b.name], time.perf_counter()
        try:
            async with asyncio.timeout(max(0.0, min(b.queue_timeout_s, deadline - time.monotonic()))):
                await sem.acquire()
        except TimeoutError:
            raise _Retryable("queue") from None
        finally:
            self.metrics.queue_seconds.labels(b.name).observe(time.perf_counter() - q0)

    def _request(self, b: BackendSettings, body: dict[str, Any], timeout: float, request_id: str) -> httpx.Request:
        headers = {"x-request-id": request_id, **b.extra_headers}
        key = self.settings.backend_api_key(b.name)
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        up = self.settings.upstream
        t = httpx.Timeout(
            b.timeout_s, connect=min(up.connect_timeout_s, timeout), write=up.write_timeout_s, pool=up.pool_timeout_s
        )
        return self.client.build_request(
            "POST", f"{b.base_url}/chat/completions", json={**body, "model": b.model_id}, headers=headers, timeout=t
        )

    async def _read(self, b: BackendSettings, response: httpx.Response, stream: bool) -> UpstreamReply:
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable("429" if status == 429 else "5xx", response.headers.get("retry-after"))
        if status in (401, 403):
            log.error("backend %s rejected the gateway's credentials (%d)", b.name, status)
            raise _Retryable("auth")
        media_type = response.headers.get("content-type", "application/json")
        if stream and status == 200:
            if not media_type.startswith("text/event-stream"):
                raise _Retryable("bad_response")
            chunks = response.aiter_bytes()
            first = await anext(chunks, b"")
            guard = _StreamGuard(response, self._sems[b.name].release)
            sse = SSERewriter(b.name, guard.stats)
            try:
                head = sse.feed(first)
            except BadEvent:
                raise _Retryable("bad_response") from None
            if not first:
                raise _Retryable("bad_response")
            return UpstreamReply(
                b.name, status, stream=self._relay(b.name, head, sse, chunks, guard), media_type=media_type, guard=guard
            )
        raw = await response.aread()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if status < 300:
                raise _Retryable("bad_response")
            data = {
                "error": {
                    "message": f"backend {b.name!r} answered {status}",
                    "type": "upstream_error",
                    "param": None,
                    "code": None,
                }
            }
        if status < 300 and "model" in data:
            data["model"] = b.name
        return UpstreamReply(b.name, status, body=data)

    async def _relay(
        self, name: str, head: bytes, sse: SSERewriter, chunks: AsyncIterator[bytes], guard: _StreamGuard
    ) -> AsyncIterator[bytes]:
        self._live.add(guard)
        error: tuple[str, str] | None = None
        try:
            if head:
                yield head
            async with asyncio.timeout_at(self._drain_at) as limit:
                guard.limit = limit
                async for chunk in chunks:
                    if out := sse.feed(chunk):
                        yield out
                if out := sse.flush():
                    yield out
            guard.stats.completed = True
        except TimeoutError:  # only the drain deadline is set on this scope
            self.metrics.shutdown_cut.inc()
            log.warning("stream from %s cut: the gateway is shutting down", name)
            error = (f"the gateway is shutting down; the stream from {name!r} was cut", "shutting_down")
        except BadEvent:
            self.metrics.stream_interrupted.labels(name).inc()
            log.warning("stream from %s sent an invalid event after the first byte", name)
            error = (f"the stream from {name!r} sent an invalid event", "bad_upstream_event")
        except httpx.HTTPError as exc:
            self.metrics.stream_interrupted.labels(name).inc()
            log.warning("stream from %s broke after the first byte (%s)", name, type(exc).__name__)
            error = (f"the stream from {name!r} was interrupted", "stream_interrupted")
        finally:
            self._live.discard(guard)
            guard.finish()
        if error is not None:
            body = {"message": error[0], "type": "upstream_error", "param": None, "code": error[1]}
            yield b"\n\ndata: " + json.dumps({"error": body}).encode() + b"\n\n"


def _final_error(failures: list[tuple[str, str]], last: _Retryable | None) -> UpstreamError:
    tried = ", ".join(f"{n}: {r}" for n, r in failures) or "no attempt fitted in the time budget"
    message = f"no backend answered ({tried})"
    reason = last.reason if last is not None else "timeout"
    err: UpstreamError
    if reason == "timeout":
        err = UpstreamTimeout(message)
    elif reason == "429":
        err = UpstreamRateLimited(message, retry_after=last.retry_after if last is not None else None)
    else:
        err = UpstreamError(message)
    err.attempts = len(failures)
    return err

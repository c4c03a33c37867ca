"""The gateway's state and the steps every request goes through: admit → route → forward → account.

In:  Settings (and optionally an engine, the unit seam for tests). Out: a started :class:`Gateway` that the
routes reach through ``api.deps``. :meth:`Gateway.start` runs in the app's lifespan: it opens the one
``httpx.AsyncClient`` and the Redis pool, loads and warms the engine (or connects to a remote feature
worker in the background), checks the backends against the router's models and starts the batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from router_models.decide.engine import Constraints, RoutingEngine
from service.auth import Caller, KeyRing
from service.catalog import Catalog, build_catalog
from service.core.config import Settings
from service.core.errors import ConfigError, EngineError, NotReady, RateLimited, UnknownModel, UpstreamError
from service.core.metrics import Metrics
from service.core.middleware import RequestContext
from service.models import ChatCompletionCreate
from service.netio import upstream_transport
from service.routing import RouteResult, RouterService, Target, message_text, parse_target, routed_text, shown
from service.store import RateLimiter, RedisLink, ScoreCache, Usage, UsageStore
from service.upstream import StreamStats, UpstreamReply, Upstreams
from service.worker import BatchingWorker, RemoteScorer

__all__ = ["Gateway", "estimate_tokens"]

log = logging.getLogger("sae_router.gateway")


def estimate_tokens(chars: int) -> int:
    """~4 characters per token: the usual rule of thumb for English with BPE tokenizers."""
    return max(1, math.ceil(chars / 4)) if chars else 0


@dataclass
class _Ready:
    scorer: BatchingWorker | RemoteScorer
    catalog: Catalog
    router: RouterService
    upstreams: Upstreams


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics.create)
    client: httpx.AsyncClient | None = None
    redis: RedisLink | None = None
    not_ready: str = "starting"
    cache: ScoreCache = field(init=False)
    limiter: RateLimiter = field(init=False)
    usage: UsageStore = field(init=False)
    _ready: _Ready | None = None
    _connector: asyncio.Task[None] | None = None
    _warming: asyncio.Task[None] | None = None
    _draining: bool = False

    def __post_init__(self) -> None:
        self.keys = KeyRing(self.settings.auth, self.settings.rate_limit)

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self, engine: RoutingEngine | None = None) -> None:
        s = self.settings
        log.debug("starting", extra={"fields": {"config": s.describe()}})
        up = s.upstream
        limits = httpx.Limits(
            max_connections=up.max_connections, max_keepalive_connections=up.max_keepalive_connections
        )
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=up.connect_timeout_s, write=up.write_timeout_s, pool=up.pool_timeout_s),
            limits=limits,  # for proxy transports from the environment
            transport=upstream_transport(limits),  # asyncio streams, not anyio (issue 13: see service.netio)
            follow_redirects=False,
        )
        await self._open_stores()
        if s.worker_url is not None:
            self.not_ready = f"connecting to the feature worker at {s.worker_url}"
            remote = RemoteScorer(self.client, s.worker_url, s.worker_timeout_s)
            self._connector = asyncio.create_task(self._connect(remote), name="sae-router-worker-connect")
        else:
            await self._start_local(engine)

    async def _open_stores(self) -> None:
        s = self.settings
        if s.redis_url is not None:
            self.redis = RedisLink(
                s.redis_url,
                timeout_s=s.redis_timeout_s,
                retry_max_s=s.redis_retry_max_s,
                prefix=s.redis_prefix,
                metrics=self.metrics,
            )
            await self.redis.start()
        self.cache = ScoreCache(self.redis, ttl_s=s.cache_ttl_s, max_entries=s.cache_max_entries)
        self.limiter, self.usage = RateLimiter(self.redis), UsageStore(self.redis)

    async def _start_local(self, engine: RoutingEngine | None) -> None:
        """Load the router and check the backends now (a bad config refuses to start); warm it up in the
        background, so /healthz and /readyz (503 until warm) answer while the first batch loads the backbone."""
        s = self.settings
        if engine is None:
            from service.engine import load_engine  # lazy: pulls in torch and the artifact loader

            self.not_ready = "loading the router"
            engine = await asyncio.to_thread(load_engine, s)
        catalog = build_catalog(s.backends, s.aliases, engine.models)  # fail before the slow warm-up
        b = s.batching
        worker = BatchingWorker(engine, max_batch=b.max_batch, max_wait_ms=b.max_wait_ms, metrics=self.metrics)
        self.not_ready = "warming up the router"
        self._warming = asyncio.create_task(self._warm(worker, catalog), name="sae-router-warm-up")

    async def _warm(self, worker: BatchingWorker, catalog: Catalog) -> None:
        try:
            await worker.start()
        except Exception as exc:
            await worker.aclose()
            self.not_ready = f"the router failed to warm up ({type(exc).__name__})"
            log.error("%s", self.not_ready, exc_info=exc)
            return
        except BaseException:
            await worker.aclose()
            raise
        self._activate(worker, catalog)

    async def wait_ready(self) -> _Ready:
        """:attr:`ready`, after waiting (up to ``server.warmup_wait_s``) for a warm-up still in progress."""
        warming = self._warming
        if warming is not None and not warming.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(warming), self.settings.server.warmup_wait_s)
        return self.ready

    def begin_shutdown(self, grace_s: float) -> None:
        """The server stopped accepting: in-flight streams get ``grace_s`` more seconds (see Upstreams.drain).
        /readyz says 503 from now on; requests in flight still complete and are accounted. The first call
        counts (the server calls it once per open connection)."""
        if self._draining:
            return
        self._draining = True
        if self._ready is not None:
            self._ready.upstreams.drain(grace_s)

    def _activate(self, scorer: BatchingWorker | RemoteScorer, catalog: Catalog) -> None:
        assert self.client is not None
        router = RouterService(scorer, self.cache, self.metrics, self.settings.routing)
        self._ready = _Ready(scorer, catalog, router, Upstreams(self.client, catalog, self.settings, self.metrics))
        self.not_ready = ""
        if catalog.excluded:
            log.warning("router models without a backend are never chosen: %s", list(catalog.excluded))
        log.info("router %s ready: %d backend(s)", scorer.version, len(catalog.backends))

    async def _connect(self, remote: RemoteScorer) -> None:
        delay = 0.1
        while True:
            try:
                await remote.connect()
                break
            except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
                self.not_ready = f"feature worker unreachable ({type(exc).__name__}); retrying"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            catalog = build_catalog(self.settings.backends, self.settings.aliases, remote.models)
        except ConfigError as exc:
            self.not_ready = str(exc)
            log.error("%s", exc)
            return
        self._activate(remote, catalog)

    async def aclose(self) -> None:
        self.not_ready = "shutting down"
        for task in (self._connector, self._warming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ready is not None and isinstance(self._ready.scorer, BatchingWorker):
            await self._ready.scorer.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.client is not None:
            await self.client.aclose()

    @property
    def ready(self) -> _Ready:
        if self._ready is None or self.not_ready:
            raise NotReady(f"the router is not ready: {self.not_ready}")
        return self._ready

    def readiness(self) -> dict[str, Any]:
        r = self._ready
        reason = self.not_ready or ("shutting down" if self._draining else "")
        return {
            "status": "not_ready" if reason else "ready",
            "reason": reason or None,
            "router": None
            if r is None
            else {
                "version": r.scorer.version,
                "models": list(r.scorer.models),
                "presets": r.scorer.presets,
                "worker": "remote" if isinstance(r.scorer, RemoteScorer) else "in-process",
                "runtime": r.scorer.runtime,
                "warm": r.scorer.warm,
            },
            "redis": self._redis_state(),
            "backends": [] if r is None else list(r.catalog.backends),
            "excluded_models": [] if r is None else list(r.catalog.excluded),
        }

    def _redis_state(self) -> str:
        if self.redis is None:
            return "disabled: cache, rate limits and usage are in-process (not shared across replicas)"
        if self.redis.up:
            return "ok"
        return "degraded: redis unreachable, cache, rate limits and usage are in-process until it is back"

    # --- request steps ---------------------------------------------------------------------------------
    async def admit(self, caller: Caller, tokens: int | None = None) -> None:
        """Count this request (and its estimated prompt tokens) against the caller's per-minute limits."""
        limits: dict[Any, tuple[int, int]] = {"requests": (caller.requests_per_min, 1)}
        if tokens is not None:
            limits["tokens"] = (caller.tokens_per_min, tokens)
        res = await self.limiter.check(caller.name, limits)
        if not res.allowed:
            self.metrics.rate_limited.labels(res.limit or "").inc()
            raise RateLimited(
                f"rate limit exceeded: {res.limit} per minute for key {caller.name!r}", retry_after_s=res.retry_after_s
            )

    async def decide(
        self,
        text: str,
        lam: float,
        models: Sequence[str] | None = None,
        max_cost: float | None = None,
        min_quality: float | None = None,
        *,
        explain: bool = False,
    ) -> RouteResult:
        ready = await self.wait_ready()
        allowed = ready.catalog.allowed
        if models is not None:
            unknown = [m for m in models if ready.catalog.backend(m) is None]
            if unknown:
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                names = ", ".join(shown(m) for m in unknown[:5]) + more
                raise UnknownModel(f"unknown model(s) {names}; GET /v1/models lists them", param="models")
            wanted = {ready.catalog.router_name[b] for b in map(ready.catalog.names.__getitem__, models)}
            allowed = tuple(m for m in allowed if m in wanted)
        return await ready.router.route(text, lam, Constraints(allowed, max_cost, min_quality), explain=explain)

    async def complete(
        self, caller: Caller, req: ChatCompletionCreate, raw: dict[str, Any], ctx: RequestContext
    ) -> UpstreamReply:
        """A chat completion: admit, route (unless a backend was named), forward with fallback, account."""
        ready = await self.wait_ready()
        target: Target = parse_target(req.model, ready.scorer.presets, ready.catalog.names)
        text = routed_text(req.messages, self.settings.routing).text if target.backend is None else ""
        prompt_tokens = estimate_tokens(sum(len(message_text(m)) for m in req.messages))
        await self.admit(caller, prompt_tokens)
        predicted: dict[str, float] = {}
        if target.backend is not None:
            candidates = [target.backend]
        else:
            assert target.lam is not None
            try:
                result = await self.decide(text, target.lam)
            except (NotReady, EngineError) as exc:
                candidates = self._unrouted(exc)
            else:
                candidates = [ready.catalog.backend_of[m] for m in result.decision.ranking]
                predicted = {ready.catalog.backend_of[m]: result.decision.cost[m] for m in result.decision.ranking}
                ctx.cache = "hit" if result.cache_hit else "miss"
                ctx.headers["x-router-lambda"] = f"{result.decision.lam:g}"
                if result.ood.flagged:
                    ctx.headers["x-router-ood"] = result.ood.action
        ctx.headers["x-router-overhead-ms"] = f"{ctx.elapsed_ms():.2f}"
        try:
            reply = await ready.upstreams.forward(raw, candidates, stream=bool(req.stream), request_id=ctx.request_id)
        except UpstreamError as exc:
            ctx.fallbacks = exc.attempts
            ctx.headers["x-router-fallbacks"] = str(exc.attempts)
            raise
        ctx.model, ctx.fallbacks = reply.backend, len(reply.failures)
        ctx.headers.update({"x-router-model": reply.backend, "x-router-fallbacks": str(len(reply.failures))})
        if reply.status < 300:
            cost = predicted.get(reply.backend)
            if reply.guard is not None:
                guard = reply.guard

                async def on_end() -> None:
                    await self._account_stream(caller, reply.backend, prompt_tokens, guard.stats, cost)

                guard.on_end = on_end
            elif reply.body is not None:
                usage, chars = reply.body.get("usage"), _content_chars(reply.body)
                await self.account(caller, reply.backend, prompt_tokens, usage, chars, cost)
        return reply

    def _unrouted(self, exc: NotReady | EngineError) -> list[str]:
        """Where a routed request goes when the router cannot score it (e.g. the remote worker is down):
        ``routing.unavailable_backend`` if configured, else the error stands."""
        backend = self.settings.routing.unavailable_backend
        if backend is None:
            raise exc
        self.metrics.router_unavailable.inc()
        log.warning("router unavailable (%s): sending to %s", exc.message, backend)
        return [backend]

    async def _account_stream(
        self, caller: Caller, backend: str, prompt_tokens: int, stats: StreamStats, predicted: float | None
    ) -> None:
        await self.account(caller, backend, prompt_tokens, stats.usage, stats.content_chars, predicted)

    async def account(
        self, caller: Caller, backend: str, prompt_tokens: int, usage: Any, out_chars: int, predicted: float | None
    ) -> None:
        """Usage and spend of one answered request; tokens from upstream ``usage`` when sent, else estimated."""
        usage = usage if isinstance(usage, dict) else {}
        tin = _int(usage.get("prompt_tokens"), prompt_tokens)
        tout = _int(usage.get("completion_tokens"), estimate_tokens(out_chars))
        spend = self._spend(backend, tin, tout, predicted)
        self.metrics.tokens.labels(backend, "in").inc(tin)
        self.metrics.tokens.labels(backend, "out").inc(tout)
        self.metrics.cost_usd.labels(backend).inc(spend)
        await self.usage.record(caller.name, Usage(backend, tin, tout, spend))
        await self.limiter.add(caller.name, "tokens", tin + tout - prompt_tokens)  # the estimate was counted

    def _spend(self, backend: str, tokens_in: int, tokens_out: int, predicted: float | None) -> float:
        """USD from the backend's prices, else the router's training prices, else its predicted cost."""
        ready = self.ready
        b = ready.catalog.backends[backend]
        trained = ready.scorer.prices.get(ready.catalog.router_name[backend], {})
        p_in = b.price_in_per_mtok if b.price_in_per_mtok is not None else trained.get("input_per_mtok")
        p_out = b.price_out_per_mtok if b.price_out_per_mtok is not None else trained.get("output_per_mtok")
        if p_in is not None or p_out is not None:
            return (tokens_in * (p_in or 0.0) + tokens_out * (p_out or 0.0)) / 1e6
        if trained.get("per_call") is not None:
            return float(trained["per_call"] or 0.0)
        return predicted or 0.0


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _content_chars(body: dict[str, Any]) -> int:
    total = 0
    for choice in body.get("choices") or ():
        content = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        total += len(content) if isinstance(content, str) else 0
    return total

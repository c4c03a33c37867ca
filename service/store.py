"""Shared state: routing-score cache, per-key rate limits and usage, in Redis with in-process fallbacks.

In:  cache lookups/stores, limit checks, usage records. Out: the same answers whichever store served them.

With ``redis_url`` set, all gateway replicas share one Redis: limits hold across replicas (one Lua script
per check, so the check-and-count is atomic), the cache is shared, usage is summed. Without it, or while
Redis is unreachable, the same structures live in this process (not shared: each replica limits on its
own). :class:`RedisLink` tracks which: the first failed call marks Redis down (logged once, ``redis_degraded``
gauge 1) and starts a probe that PINGs with exponential backoff until Redis answers again (logged once,
gauge 0). While down, calls go straight to memory without waiting on Redis timeouts; each is counted in
``redis_fallback_ops``. Usage counted in memory during an outage is written to Redis as soon as it answers
again (``redis_replayed``), so no replica's requests go missing from the shared totals; rate-limit counts
made in memory are not (they expire within two minutes anyway).

Rate limits use a sliding window approximated from two fixed one-minute windows (the previous window's
count weighted by how much of it still overlaps the last minute, rounded up), so a burst at a window edge
cannot double the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.metrics import Metrics

__all__ = ["WINDOW_S", "LimitResult", "RateLimiter", "RedisLink", "ScoreCache", "Usage", "UsageStore"]

log = logging.getLogger("sae_router.store")
T = TypeVar("T")
WINDOW_S = 60
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


class RedisLink:
    """One Redis connection pool and whether it is usable right now."""

    def __init__(self, url: str, *, timeout_s: float, retry_max_s: float, prefix: str, metrics: Metrics) -> None:
        # One quick retry covers a pooled connection gone stale across a Redis restart; anything slower than
        # timeout_s is treated as an outage rather than waited on.
        self.client: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1)
        )
        self.prefix, self.retry_max_s, self.metrics = prefix, retry_max_s, metrics
        self.up: bool | None = None  # None until the first answer
        self._probe: asyncio.Task[None] | None = None
        self.on_up: list[Callable[[], Awaitable[None]]] = []  # run (in order) each time Redis is back

    async def start(self) -> None:
        try:
            await self.client.ping()
        except _UNAVAILABLE as exc:
            self.mark_down(exc)
        else:
            self._mark_up()

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.client.aclose()

    @property
    def state(self) -> str:
        return "ok" if self.up else "degraded"

    def mark_down(self, exc: BaseException) -> None:
        if self.up is not False:
            log.warning(
                "redis unreachable (%s): cache, rate limits and usage now in-process until it is back",
                type(exc).__name__,
            )
            self.metrics.redis_degraded.set(1)
        self.up = False
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._reconnect(), name="sae-router-redis-probe")

    def _mark_up(self) -> None:
        if self.up is not True:
            if self.up is False:
                log.info("redis reachable again: cache, rate limits and usage shared again")
            self.metrics.redis_degraded.set(0)
        self.up = True

    async def _reconnect(self) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                await self.client.ping()
            except _UNAVAILABLE:
                delay = min(delay * 2, self.retry_max_s)
                continue
            except RedisError:
                delay = min(delay * 2, self.retry_max_s)
                continue
            self._mark_up()
            for callback in self.on_up:
                try:
                    await callback()
                except Exception as exc:  # the callback logs and keeps its data; the next recovery retries
                    log.error("after redis came back: %s", type(exc).__name__, exc_info=exc)
            if self.up:
                return
            # Lost again while the callbacks ran (an op on a stale connection): mark_down saw this probe still
            # running and started none, so this one goes on, or the link would stay down for good.
            delay = 0.1

    async def run(self, op: str, remote: Callable[[Redis], Awaitable[T]], local: Callable[[], T]) -> tuple[T, str]:
        """``remote(client)`` while Redis is up, else (or when it fails) ``local()``; says which served."""
        if self.up:
            try:
                return await remote(self.client), "redis"
            except _UNAVAILABLE as exc:
                self.mark_down(exc)
            except RedisError as exc:  # a reply error: Redis is up, this call went wrong
                log.error("redis %s failed: %s", op, type(exc).__name__)
        self.metrics.redis_fallback_ops.labels(op).inc()
        return local(), "memory"


class _Stored:
    def __init__(self, link: RedisLink | None) -> None:
        self.link = link

    async def _run(self, op: str, remote: Callable[[Redis], Awaitable[T]], local: Callable[[], T]) -> tuple[T, str]:
        if self.link is None:
            return local(), "memory"
        return await self.link.run(op, remote, local)

    def _key(self, *parts: str) -> str:
        prefix = self.link.prefix if self.link is not None else "sae-router"
        return ":".join((prefix, *parts))


class ScoreCache(_Stored):
    """JSON documents (serialized PromptScores) by key, with a TTL; an LRU in memory."""

    def __init__(self, link: RedisLink | None, *, ttl_s: int, max_entries: int) -> None:
        super().__init__(link)
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._mem: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, key: str) -> dict[str, Any] | None:
        if self.ttl_s == 0:
            return None
        k = self._key("scores", key)

        async def remote(r: Redis) -> str | None:
            raw = await r.get(k)
            return _text(raw) if raw is not None else None

        raw, _ = await self._run("cache_get", remote, lambda: self._mem_get(k))
        return json.loads(raw) if raw is not None else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if self.ttl_s == 0:
            return
        k, raw = self._key("scores", key), json.dumps(value, separators=(",", ":"))

        async def remote(r: Redis) -> None:
            await r.set(k, raw, ex=self.ttl_s)

        await self._run("cache_set", remote, lambda: self._mem_set(k, raw))

    def _mem_get(self, k: str) -> str | None:
        hit = self._mem.get(k)
        if hit is None or hit[0] < time.monotonic():
            self._mem.pop(k, None)
            return None
        self._mem.move_to_end(k)
        return hit[1]

    def _mem_set(self, k: str, raw: str) -> None:
        self._mem[k] = (time.monotonic() + self.ttl_s, raw)
        self._mem.move_to_end(k)
        while len(self._mem) > self.max_entries:
            self._mem.popitem(last=False)


# KEYS: (current window, previous window) per limit. ARGV: fraction of the current window elapsed, window
# seconds, then (limit, cost) per limit. Checks every limit first and counts only if all pass.
_LIMIT_LUA = """
local frac = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if cur + math.ceil(prev * (1 - frac)) + cost > limit then
    return {0, i - 1, cur, prev}
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[2 * i - 1], ARGV[2 + 2 * i])
  redis.call('EXPIRE', KEYS[2 * i - 1], window * 2)
end
return {1, -1, 0, 0}
"""

LimitKind = Literal["requests", "tokens"]


@dataclass(frozen=True)
class LimitResult:
    allowed: bool
    limit: LimitKind | None = None  # which limit refused
    retry_after_s: float = 0.0


def _retry_after(cur: int, prev: int, cost: int, limit: int, frac: float) -> float:
    """Seconds until ``cost`` more fits under ``limit`` in the approximated sliding window."""
    if cost > limit:
        return float(WINDOW_S)
    if cur + cost > limit:  # wait for the next window, then for enough of this one to slide out
        need = 1 - (limit - cost) / cur if cur else 0.0
        return (1 - frac) * WINDOW_S + max(need, 0.0) * WINDOW_S
    need = 1 - (limit - cost - cur) / prev if prev else 0.0
    return max((need - frac) * WINDOW_S, 0.0) + 0.001


class RateLimiter(_Stored):
    """Per-key requests/min and tokens/min in sliding one-minute windows."""

    def __init__(self, link: RedisLink | None) -> None:
        super().__init__(link)
        self._mem: dict[tuple[str, str, int], int] = defaultdict(int)
        self._mem_window = 0
        self._script = link.client.register_script(_LIMIT_LUA) if link is not None else None

    async def check(self, key: str, limits: dict[LimitKind, tuple[int, int]]) -> LimitResult:
        """``limits``: kind -> (limit per minute, cost of this request). Counts the cost only if all pass."""
        active = [(kind, lim, cost) for kind, (lim, cost) in limits.items() if lim > 0]
        if not active:
            return LimitResult(True)
        now = time.time()
        window, frac = int(now // WINDOW_S), (now % WINDOW_S) / WINDOW_S
        keys = [k for kind, _, _ in active for k in (self._wkey(kind, key, window), self._wkey(kind, key, window - 1))]
        args: list[float] = [frac, WINDOW_S]
        for _, lim, cost in active:
            args += [lim, cost]

        async def remote(_: Redis) -> list[int]:
            assert self._script is not None
            out = await self._script(keys=keys, args=args)
            return [int(x) for x in out]

        (ok, idx, cur, prev), _ = await self._run(
            "rate_limit", remote, lambda: self._mem_check(active, key, window, frac)
        )
        if ok:
            return LimitResult(True)
        kind, lim, cost = active[idx]
        return LimitResult(False, kind, _retry_after(cur, prev, cost, lim, frac))

    async def add(self, key: str, kind: LimitKind, amount: int) -> None:
        """Count more of ``kind`` without checking (completion tokens known only after the response)."""
        if amount <= 0:
            return
        k = self._wkey(kind, key, int(time.time() // WINDOW_S))

        async def remote(r: Redis) -> None:
            async with r.pipeline(transaction=True) as p:
                p.incrby(k, amount)
                p.expire(k, WINDOW_S * 2)
                await p.execute()

        def local() -> None:
            self._mem[(kind, key, int(time.time() // WINDOW_S))] += amount

        await self._run("rate_limit_add", remote, local)

    def _wkey(self, kind: str, key: str, window: int) -> str:
        return self._key("rl", kind, key, str(window))

    def _mem_check(self, active: list[tuple[LimitKind, int, int]], key: str, window: int, frac: float) -> list[int]:
        if window != self._mem_window:  # drop windows that no longer count
            self._mem_window = window
            for stale in [k for k in self._mem if k[2] < window - 1]:
                del self._mem[stale]
        for i, (kind, lim, cost) in enumerate(active):
            cur, prev = self._mem.get((kind, key, window), 0), self._mem.get((kind, key, window - 1), 0)
            if cur + math.ceil(prev * (1 - frac)) + cost > lim:
                return [0, i, cur, prev]
        for kind, _, cost in active:
            self._mem[(kind, key, window)] += cost
        return [1, -1, 0, 0]


@dataclass(frozen=True)
class Usage:
    """One request's usage, as recorded."""

    model: str
    tokens_in: int
    tokens_out: int
    spend_usd: float


_FIELDS = ("requests", "tokens_in", "tokens_out", "spend_nusd")  # spend in 1e-9 USD, kept integral


class UsageStore(_Stored):
    """Per-key totals by model: requests, tokens in/out, estimated spend."""

    def __init__(self, link: RedisLink | None) -> None:
        super().__init__(link)
        self._mem: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        if link is not None:
            link.on_up.append(self.replay)

    async def replay(self) -> None:
        """Add what was counted in memory (while Redis was down) to Redis, then forget it here."""
        if self.link is None or not self._mem:
            return
        pending, self._mem = self._mem, defaultdict(lambda: defaultdict(int))
        try:
            async with self.link.client.pipeline(transaction=True) as p:
                for key, fields in pending.items():
                    for name, v in fields.items():
                        p.hincrby(self._key("usage", key), name, v)
                await p.execute()
        except (*_UNAVAILABLE, RedisError) as exc:
            for key, fields in pending.items():  # keep it for the next recovery
                for name, v in fields.items():
                    self._mem[key][name] += v
            if isinstance(exc, _UNAVAILABLE):
                self.link.mark_down(exc)
            raise
        n = sum(len(f) for f in pending.values())
        self.link.metrics.redis_replayed.inc(n)
        log.info("wrote %d usage counter(s) kept in memory during the redis outage", n)

    async def record(self, key: str, u: Usage) -> None:
        values = dict(zip(_FIELDS, (1, u.tokens_in, u.tokens_out, round(u.spend_usd * 1e9)), strict=True))
        hkey = self._key("usage", key)

        async def remote(r: Redis) -> None:
            async with r.pipeline(transaction=True) as p:
                for field, v in values.items():
                    p.hincrby(hkey, f"{field}:{u.model}", v)
                await p.execute()

        def local() -> None:
            for field, v in values.items():
                self._mem[key][f"{field}:{u.model}"] += v

        await self._run("usage_record", remote, local)

    async def totals(self, key: str) -> tuple[dict[str, dict[str, float]], str]:
        """model -> {requests, tokens_in, tokens_out, estimated_spend_usd}; and which store(s) answered."""
        hkey = self._key("usage", key)

        async def remote(r: Redis) -> dict[str, int]:
            raw = await r.hgetall(hkey)
            return {_text(k): int(v) for k, v in raw.items()}

        stored, source = await self._run("usage_read", remote, lambda: dict[str, int]())
        local = self._mem.get(key, {})
        if source == "redis" and local:
            source = "redis+memory"
        by_model: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(_FIELDS, 0.0))
        for fields in (stored, local):
            for name, v in fields.items():
                field, _, model = name.partition(":")
                if field in _FIELDS:
                    by_model[model][field] += v
        return {m: _public(f) for m, f in sorted(by_model.items())}, source


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _public(f: dict[str, float]) -> dict[str, float]:
    return {
        "requests": f["requests"],
        "tokens_in": f["tokens_in"],
        "tokens_out": f["tokens_out"],
        "estimated_spend_usd": f["spend_nusd"] / 1e9,
    }

"""Prometheus metrics, one :class:`Metrics` (with its own CollectorRegistry) per app.

A per-app registry means two apps in one process (tests, a gateway beside a worker) never clash, and
``/metrics`` shows only its own app. Labels never carry keys, prompts or request ids: endpoint, model
(backend name), status, reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter  # endpoint, model, status
    routing_seconds: Histogram  # routed text → decision (cache, scoring, decide)
    batch_size: Histogram  # prompts per engine.score_batch call
    score_seconds: Histogram  # one engine.score_batch call
    cache: Counter  # result = hit | miss
    fallbacks: Counter  # model (the one that failed), reason
    upstream_seconds: Histogram  # model, outcome; upstream time only (after the concurrency slot), until the
    #                              body (non-streaming) or the first chunk
    queue_seconds: Histogram  # model; waiting for one of the backend's max_concurrency slots
    stream_interrupted: Counter  # model
    cost_usd: Counter  # model; estimated spend
    tokens: Counter  # model, direction = in | out
    rate_limited: Counter  # limit = requests | tokens | upstream
    redis_degraded: Gauge  # 1 while cache/limits/usage run in-process because Redis is unreachable
    redis_fallback_ops: Counter  # op; calls served in-process while Redis was configured but down
    redis_replayed: Counter  # usage increments counted in-process during an outage, written to Redis after it
    router_unavailable: Counter  # routed requests sent to routing.unavailable_backend because scoring failed
    ood: Counter  # action; prompts flagged out-of-distribution (routing.ood_threshold)
    shutdown_cut: Counter  # streams ended with an SSE error event because the shutdown grace ran out

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry(auto_describe=True)
        p = "sae_router_"
        return cls(
            registry=r,
            requests=Counter(p + "requests", "HTTP requests", ["endpoint", "model", "status"], registry=r),
            routing_seconds=Histogram(p + "routing_seconds", "Routing decision latency", buckets=_FAST, registry=r),
            batch_size=Histogram(p + "batch_size", "Prompts per score_batch call", buckets=_BATCH, registry=r),
            score_seconds=Histogram(p + "score_batch_seconds", "score_batch latency", buckets=_FAST, registry=r),
            cache=Counter(p + "cache", "Routing-score cache lookups", ["result"], registry=r),
            fallbacks=Counter(p + "fallbacks", "Upstream attempts that failed over", ["model", "reason"], registry=r),
            upstream_seconds=Histogram(
                p + "upstream_seconds", "Upstream latency", ["model", "outcome"], buckets=_SLOW, registry=r
            ),
            queue_seconds=Histogram(
                p + "upstream_queue_seconds", "Wait for a backend slot", ["model"], buckets=_FAST, registry=r
            ),
            stream_interrupted=Counter(p + "stream_interrupted", "Streams cut after first byte", ["model"], registry=r),
            cost_usd=Counter(p + "estimated_cost_usd", "Estimated upstream spend", ["model"], registry=r),
            tokens=Counter(p + "tokens", "Tokens sent and received", ["model", "direction"], registry=r),
            rate_limited=Counter(p + "rate_limited", "Requests refused with 429", ["limit"], registry=r),
            redis_degraded=Gauge(p + "redis_degraded", "1 while Redis is unreachable", registry=r),
            redis_fallback_ops=Counter(p + "redis_fallback_ops", "Ops served in-process", ["op"], registry=r),
            redis_replayed=Counter(p + "redis_replayed", "Outage usage written to Redis later", registry=r),
            router_unavailable=Counter(p + "router_unavailable", "Routed without scores", registry=r),
            ood=Counter(p + "ood", "Prompts flagged out-of-distribution", ["action"], registry=r),
            shutdown_cut=Counter(p + "shutdown_cut", "Streams cut by the shutdown grace", registry=r),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

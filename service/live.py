"""A recent-window summary of the gateway's own Prometheus metrics, for the live page of ``/ui``.

In:  the app's :class:`~service.core.metrics.Metrics` registry (in-process ``prometheus_client``; no Prometheus
     server needed). Out: decisions per model, spend, tokens, fallbacks, cache hit rate, rate-limit refusals
     and routing / upstream latency quantiles over the last ``window_s`` seconds.

Counters and histograms only grow, so a window is the difference between the registry now and a snapshot
taken about ``window_s`` ago. :class:`LiveWindow` keeps such snapshots in a small ring (one per
``spacing_s`` at most, each time the summary is asked for); until one is old enough the baseline is the
registry's start, all zeros, and the summary says ``since_start``. Quantiles interpolate linearly inside
histogram buckets, as PromQL's ``histogram_quantile`` does, so they agree with the Grafana dashboard
(``deploy/grafana/``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from service.core.metrics import Metrics

__all__ = [
    "DECISION_ENDPOINTS",
    "LiveWindow",
    "Snapshot",
    "bucket_quantile",
    "live_window",
    "read_registry",
    "summarize",
]

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted label pairs)
Snapshot = dict[Key, float]
P = "sae_router_"
DECISION_ENDPOINTS = {"/route": "route", "/v1/chat/completions": "chat"}


def read_registry(registry: CollectorRegistry) -> Snapshot:
    """Every sample of the registry except the ``_created`` timestamps, keyed by name and labels."""
    out: Snapshot = {}
    for family in registry.collect():
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative ``(upper bound, count)`` buckets (+Inf last), interpolated linearly within
    the bucket it falls in; None without observations. Above the last finite bound: that bound (as PromQL)."""
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    rank = q * bs[-1][1]
    lower, below = 0.0, 0.0
    for upper, cum in bs:
        if cum >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cum - below)
        lower, below = (upper if not math.isinf(upper) else lower), cum
    return lower


@dataclass
class _Delta:
    """The difference between two snapshots, with helpers to group it by label."""

    now: Snapshot
    base: Snapshot

    def items(self, name: str) -> Iterable[tuple[dict[str, str], float]]:
        for (n, labels), value in self.now.items():
            if n == name:
                yield dict(labels), value - self.base.get((n, labels), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.items(name):
            if v:
                out[labels.get(label, "")] += v
        return dict(out)

    def total(self, name: str) -> float:
        return sum(v for _, v in self.items(name))

    def latency(self, histogram: str) -> dict[str, float | int | None]:
        cum: dict[float, float] = defaultdict(float)
        for labels, v in self.items(histogram + "_bucket"):
            cum[float(labels["le"])] += v
        n, total = self.total(histogram + "_count"), self.total(histogram + "_sum")
        ms = [bucket_quantile(q, cum.items()) for q in (0.5, 0.99)]
        p50, p99 = (None if v is None else round(v * 1000, 3) for v in ms)
        return {"count": int(n), "mean_ms": round(total / n * 1000, 3) if n else None, "p50_ms": p50, "p99_ms": p99}


def _decisions(d: _Delta) -> dict[str, dict[str, int]]:
    """Per backend: requests of /route and of /v1/chat/completions that named it (chosen, or answered)."""
    out: dict[str, dict[str, int]] = {}
    for labels, v in d.items(P + "requests_total"):
        kind = DECISION_ENDPOINTS.get(labels.get("endpoint", ""))
        if kind is None or not labels.get("model") or not v:
            continue
        row = out.setdefault(labels["model"], {"route": 0, "chat": 0})
        row[kind] += int(v)
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["route"] + kv[1]["chat"])))


def _requests(d: _Delta) -> dict[str, Any]:
    by_status: dict[str, int] = defaultdict(int)
    for labels, v in d.items(P + "requests_total"):
        if v and labels.get("endpoint") in DECISION_ENDPOINTS:
            by_status[labels.get("status", "")] += int(v)
    total = sum(by_status.values())
    errors = sum(n for s, n in by_status.items() if not s.startswith(("2", "3")))
    return {"total": total, "errors": errors, "by_status": dict(sorted(by_status.items()))}


def summarize(now: Snapshot, base: Snapshot) -> dict[str, Any]:
    """The live page's numbers between two snapshots (``base`` older)."""
    d = _Delta(now, base)
    cache = d.by(P + "cache_total", "result")
    lookups = cache.get("hit", 0.0) + cache.get("miss", 0.0)
    fallbacks: dict[str, dict[str, int]] = defaultdict(dict)
    for labels, v in d.items(P + "fallbacks_total"):
        if v:
            fallbacks[labels.get("model", "")][labels.get("reason", "")] = int(v)
    spend = {m: round(v, 8) for m, v in sorted(d.by(P + "estimated_cost_usd_total", "model").items())}
    tokens: dict[str, dict[str, int]] = defaultdict(lambda: {"in": 0, "out": 0})
    for labels, v in d.items(P + "tokens_total"):
        if v:
            tokens[labels.get("model", "")][labels.get("direction", "in")] += int(v)
    return {
        "requests": _requests(d),
        "decisions": _decisions(d),
        "spend_usd": {"total": round(sum(spend.values()), 8), "by_model": spend},
        "tokens": dict(tokens),
        "fallbacks": {"total": int(sum(sum(r.values()) for r in fallbacks.values())), "by_model": dict(fallbacks)},
        "cache": {
            "hits": int(cache.get("hit", 0)),
            "misses": int(cache.get("miss", 0)),
            "hit_rate": round(cache.get("hit", 0.0) / lookups, 4) if lookups else None,
        },
        "rate_limited": {k: int(v) for k, v in d.by(P + "rate_limited_total", "limit").items()},
        "routing_latency": d.latency(P + "routing_seconds"),
        "upstream_latency": d.latency(P + "upstream_seconds"),
        "redis_degraded": bool(now.get((P + "redis_degraded", ()), 0.0)),
    }


@dataclass
class LiveWindow:
    """Snapshots of one registry, spaced at least ``spacing_s`` apart, kept for up to ``keep_s``."""

    metrics: Metrics
    spacing_s: float = 5.0
    keep_s: float = 3600.0
    _ring: deque[tuple[float, Snapshot]] = field(default_factory=deque)

    def summary(self, window_s: float, now: float | None = None) -> dict[str, Any]:
        t = time.monotonic() if now is None else now
        snap = read_registry(self.metrics.registry)
        base_t, base = self._baseline(t - window_s)
        self._remember(t, snap)
        out = summarize(snap, base)
        span = None if base_t is None else round(t - base_t, 1)
        return {"object": "live", "window_s": window_s, "span_s": span, "since_start": base_t is None, **out}

    def _baseline(self, cutoff: float) -> tuple[float | None, Snapshot]:
        """The newest snapshot taken at or before ``cutoff``; else the registry's start (zeros)."""
        best: tuple[float | None, Snapshot] = (None, {})
        for t, snap in self._ring:
            if t > cutoff:
                break
            best = (t, snap)
        return best

    def _remember(self, t: float, snap: Snapshot) -> None:
        if not self._ring or t - self._ring[-1][0] >= self.spacing_s:
            self._ring.append((t, snap))
        while len(self._ring) > 1 and self._ring[1][0] <= t - self.keep_s:
            self._ring.popleft()


def live_window(state: Any, metrics: Metrics) -> LiveWindow:
    """The app's one :class:`LiveWindow` (made on first use and kept on ``app.state``)."""
    window: LiveWindow | None = getattr(state, "ui_live_window", None)
    if window is None or window.metrics is not metrics:
        window = LiveWindow(metrics)
        state.ui_live_window = window
    return window

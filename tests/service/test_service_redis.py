"""Redis-backed state on a real redis-server: limits shared by two gateway replicas, a shared score cache and
usage, and Redis going away and coming back mid-test without the gateway missing a request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, OTHER_KEY, FakeEngine, RedisServer

from service.core.config import Settings
from service.main import create_app


def route(client: TestClient, prompt: str = "x", key_headers: dict[str, str] = CLIENT_AUTH) -> tuple[int, dict]:
    r = client.post("/route", json={"prompt": prompt}, headers=key_headers)
    return r.status_code, r.json()


def test_limits_hold_across_two_replicas(make_settings: Callable[..., Settings], redis_server: RedisServer) -> None:
    settings = make_settings(redis_url=redis_server.url, rate_limit={"requests_per_min": 3})
    with TestClient(create_app(settings, FakeEngine())) as a, TestClient(create_app(settings, FakeEngine())) as b:
        codes = [route(c)[0] for c in (a, b, a, b, a)]
        refused = b.post("/route", json={"prompt": "x"}, headers=CLIENT_AUTH)
        other_key = route(a, key_headers={"authorization": f"Bearer {OTHER_KEY}"})[0]
        ready = a.get("/readyz").json()
    assert codes == [200, 200, 200, 429, 429]  # 3 per minute in all, whichever replica is asked
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # the window slides: up to two minutes
    assert other_key == 200
    assert ready["redis"] == "ok"


def test_cache_and_usage_are_shared(make_settings: Callable[..., Settings], redis_server: RedisServer) -> None:
    settings = make_settings(redis_url=redis_server.url)
    engine_b = FakeEngine()
    with TestClient(create_app(settings, FakeEngine())) as a, TestClient(create_app(settings, engine_b)) as b:
        assert route(a, "a hard proof")[1]["cache"] == "miss"
        warmup_batches = len(engine_b.batches)
        assert route(b, "a hard proof")[1]["cache"] == "hit"
        assert len(engine_b.batches) == warmup_batches  # b never scored it
        for client in (a, b):
            body = {"model": "router", "messages": [{"role": "user", "content": "a hard proof"}]}
            assert client.post("/v1/chat/completions", json=body, headers=CLIENT_AUTH).status_code == 200
        usage = b.get("/v1/usage", headers=CLIENT_AUTH).json()
    assert usage["store"] == "redis" and usage["requests"] == 2 and usage["tokens_in"] == 22


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_redis_outage_degrades_and_recovers(
    make_settings: Callable[..., Settings], own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sae_router")
    settings = make_settings(redis_url=own_redis.url, redis_retry_max_s=0.2, rate_limit={"requests_per_min": 1000})
    with TestClient(create_app(settings, FakeEngine())) as client:
        assert route(client)[0] == 200
        assert client.get("/readyz").json()["redis"] == "ok"

        own_redis.stop()
        t0 = time.monotonic()
        assert [route(client, f"p{i}")[0] for i in range(5)] == [200] * 5  # keeps serving
        assert time.monotonic() - t0 < 2  # without waiting out Redis timeouts on every call
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["redis"].startswith("degraded")
        assert _metric(client, "sae_router_redis_degraded") == 1
        assert client.get("/v1/usage", headers=CLIENT_AUTH).json()["store"] == "memory"
        assert "redis_fallback_ops_total" in client.get("/metrics").text

        own_redis.start()
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["redis"] != "ok":
            assert time.monotonic() < deadline, "gateway did not notice Redis came back"
            time.sleep(0.05)
        assert _metric(client, "sae_router_redis_degraded") == 0
        assert route(client, "after")[0] == 200
        assert client.get("/v1/usage", headers=CLIENT_AUTH).json()["store"] == "redis"

    messages = [r.getMessage() for r in caplog.records if r.name == "sae_router.store"]
    assert sum("redis unreachable" in m for m in messages) == 1  # logged once per transition
    assert sum("reachable again" in m for m in messages) == 1


def test_gateway_starts_without_redis_and_picks_it_up(
    make_settings: Callable[..., Settings], own_redis: RedisServer
) -> None:
    own_redis.stop()
    settings = make_settings(redis_url=own_redis.url, redis_retry_max_s=0.2)
    with TestClient(create_app(settings, FakeEngine())) as client:
        assert client.get("/readyz").json()["redis"].startswith("degraded")
        assert route(client)[0] == 200
        own_redis.start()
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["redis"] != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_redis_lost_again_while_replaying_is_probed_again(redis_server: RedisServer) -> None:
    """A request that fails on a stale connection while the reconnect probe is still replaying usage marks Redis
    down again; the probe must keep going (not end with the link down for good and usage stuck in memory)."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError

    from service.core.metrics import Metrics
    from service.store import RedisLink

    async def scenario() -> tuple[bool | None, int]:
        link = RedisLink(redis_server.url, timeout_s=1.0, retry_max_s=0.05, prefix="t", metrics=Metrics.create())
        calls = 0

        async def on_up() -> None:  # what UsageStore.replay does, with an op failing mid-way the first time
            nonlocal calls
            calls += 1
            if calls == 1:
                link.mark_down(RedisConnectionError("stale pooled connection"))

        link.on_up.append(on_up)
        link.mark_down(RedisConnectionError("outage"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if link.up and calls >= 2:
                break
        await link.aclose()
        return link.up, calls

    up, calls = asyncio.run(scenario())
    assert up is True and calls == 2

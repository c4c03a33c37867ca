"""The feature worker: batching under concurrency (one engine call at a time), and the remote mode where the
gateway scores prompts through a separate worker app over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, FakeEngine, serve, wait_ready

from service.core.config import Settings
from service.core.errors import ConfigError
from service.main import create_app
from service.worker_app import create_worker_app


async def _concurrent_routes(url: str, prompts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=CLIENT_AUTH, timeout=20) as client:
        return list(await asyncio.gather(*(client.post("/route", json={"prompt": p}) for p in prompts)))


def test_batching_really_batches(make_settings: Callable[..., Settings]) -> None:
    engine = FakeEngine(sleep_s=0.15)
    settings = make_settings(batching={"max_batch": 8, "max_wait_ms": 30})
    prompts = [f"prompt number {i}" for i in range(12)] + ["same"] * 4
    with serve(create_app(settings, engine)) as url:
        replies = asyncio.run(_concurrent_routes(url, prompts))
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in replies] == [200] * len(prompts)
    calls = engine.batches[1:]  # after the warm-up batch
    assert engine.max_inside == 1  # the engine is never entered concurrently
    assert max(len(b) for b in calls) > 1
    assert all(len(b) <= 8 for b in calls)
    assert sum(b.count("same") for b in calls) == 1  # duplicates in a batch are scored once
    count = next(
        float(line.split()[1]) for line in metrics.splitlines() if line.startswith("sae_router_batch_size_count")
    )
    total = next(
        float(line.split()[1]) for line in metrics.splitlines() if line.startswith("sae_router_batch_size_sum")
    )
    assert count == len(engine.batches) and total / count > 1  # mean batch size over 1


def test_remote_worker_mode(make_settings: Callable[..., Settings]) -> None:
    engine = FakeEngine(version="remote-7")
    with serve(create_worker_app(make_settings(), engine)) as worker_url:
        settings = make_settings(worker_url=worker_url)
        with TestClient(create_app(settings)) as client:  # no engine: the gateway loads none
            wait_ready(client)
            ready = client.get("/readyz")
            routed = client.post("/route", json={"prompt": "a hard proof", "explain": True}, headers=CLIENT_AUTH)
            body = {"model": "router", "messages": [{"role": "user", "content": "an easy one"}]}
            answered = client.post("/v1/chat/completions", json=body, headers=CLIENT_AUTH)
        info = httpx.get(f"{worker_url}/v1/info").json()
        worker_metrics = httpx.get(f"{worker_url}/metrics").text
    assert ready.json()["router"]["worker"] == "remote" and ready.json()["router"]["version"] == "remote-7"
    assert routed.status_code == 200, routed.text
    assert routed.json()["model"] == "large-model" and routed.json()["router_version"] == "remote-7"
    assert "kw:hard" in [f["name"] for f in routed.json()["explanation"]["features"]]
    assert answered.json()["model"] == "small-model"
    assert ["a hard proof"] in engine.batches and ["an easy one"] in engine.batches
    assert info["version"] == "remote-7" and info["models"] == list(engine.models) and info["presets"] == engine.presets
    assert info["prices"]["medium-model"] == {"input_per_mtok": None, "output_per_mtok": None, "per_call": 0.004}
    assert "sae_router_batch_size_count" in worker_metrics


def test_worker_api(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_worker_app(make_settings(), FakeEngine())) as client:
        scored = client.post("/v1/score", json={"texts": ["a hard proof", "an easy one"]})
        empty = client.post("/v1/score", json={"texts": []})
        wrong = client.post("/v1/score", json={"texts": "a"})
        ready = client.get("/readyz")
    assert scored.status_code == 200
    results = scored.json()["results"]
    assert results[0]["quality"][2] == 0.95 and results[1]["quality"][0] == 0.9
    assert results[0]["features"]["size"] == 8 and 1 in results[0]["features"]["indices"]
    assert empty.status_code == 422 and wrong.status_code == 422
    assert ready.json() == {"status": "ready", "version": "fake-1"}


def test_gateway_not_ready_while_worker_unreachable(make_settings: Callable[..., Settings], closed_port: int) -> None:
    settings = make_settings(worker_url=f"http://127.0.0.1:{closed_port}")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        routed = client.post("/route", json={"prompt": "x"}, headers=CLIENT_AUTH)
        alive = client.get("/healthz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert "feature worker" in ready.json()["reason"]
    assert routed.status_code == 503 and routed.json()["error"]["code"] == "not_ready"
    assert alive.status_code == 200


def test_refuses_to_start_when_backends_do_not_fit(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(backends={"gpt-5": "ok"})
    app = create_app(settings, FakeEngine())
    with pytest.raises(ConfigError, match="'gpt-5' is not a model of the router and has no alias"), TestClient(app):
        pass

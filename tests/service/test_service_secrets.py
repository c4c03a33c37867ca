"""Keys never leak: not the backends' upstream key, not the clients' keys, in no log line, response body,
header or metric, across successes, upstream failures, auth failures and streams. And logs are JSON lines,
one per request, carrying the request id."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, CLIENT_KEY, OTHER_KEY, UPSTREAM_SECRET, FakeEngine, serve

from service.core.config import Settings
from service.core.logging import JsonFormatter
from service.main import create_app

SECRETS = (UPSTREAM_SECRET, CLIENT_KEY, OTHER_KEY, CLIENT_KEY.removeprefix("sk-"))


def test_no_secret_in_logs_responses_or_metrics(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(backends={"small-model": "e401", "medium-model": "e500", "large-model": "hang"})
    seen: list[str] = []

    def keep(r: httpx.Response) -> None:
        seen.append(r.text)
        seen.append(json.dumps(dict(r.headers)))

    with serve(create_app(settings, FakeEngine())) as url, httpx.Client(base_url=url, timeout=10) as client:
        msg = [{"role": "user", "content": "a hard proof"}]
        for model in ("router", "small-model", "medium-model"):
            keep(client.post("/v1/chat/completions", json={"model": model, "messages": msg}, headers=CLIENT_AUTH))
        keep(
            client.post(
                "/v1/chat/completions", json={"model": "router", "messages": msg, "stream": True}, headers=CLIENT_AUTH
            )
        )
        keep(client.post("/route", json={"prompt": "x"}, headers={"authorization": f"Bearer {CLIENT_KEY}x"}))
        keep(
            client.post(
                "/route", json={"prompt": UPSTREAM_SECRET[:5]}, headers={"authorization": f"Bearer {OTHER_KEY}"}
            )
        )
        keep(client.post("/route", content=b"{bad", headers=CLIENT_AUTH))
        for path in ("/v1/usage", "/v1/models", "/readyz", "/metrics"):
            keep(client.get(path, headers=CLIENT_AUTH))
    assert any("upstream_error" in s for s in seen) and any("invalid_api_key" in s for s in seen)  # it did fail
    formatted = [JsonFormatter().format(r) for r in caplog.records]
    everything = "\n".join([*seen, *formatted, caplog.text])
    for secret in SECRETS:
        assert secret not in everything


def test_one_json_log_line_per_request(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sae_router")
    with TestClient(create_app(make_settings(), FakeEngine())) as client:
        body = {"model": "router", "messages": [{"role": "user", "content": "a hard proof"}]}
        client.post("/v1/chat/completions", json=body, headers={**CLIENT_AUTH, "x-request-id": "abc-1"})
        client.post("/route", json={"prompt": "x"}, headers={"x-request-id": "bad id with spaces"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "request"]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == "abc-1" and first["path"] == "/v1/chat/completions" and first["status"] == 200
    assert first["model"] == "large-model" and first["key"] == "team-a" and first["cache"] == "miss"
    assert first["duration_ms"] > 0 and first["level"] == "INFO"
    assert second["status"] == 401 and second["request_id"] != "bad id with spaces" and len(second["request_id"]) == 32

"""The gateway through ``TestClient(create_app(...))`` against the fake upstream on a real socket:
/route, chat (routed and pass-through), fallback on each failure kind, models, usage, health, errors, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, OTHER_KEY, FakeEngine, FakeUpstream

from service.core.config import Settings
from service.main import create_app

Client = Callable[..., Any]


@contextmanager
def gateway(settings: Settings, engine: FakeEngine | None = None) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine or FakeEngine())) as client:
        yield client


def chat(client: TestClient, content: str, model: str = "router", **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=CLIENT_AUTH)


# --- /route ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("an easy one", "small-model"), ("tell me a story", "medium-model"), ("a hard proof", "large-model")],
)
def test_route_picks_by_prompt(make_settings: Callable[..., Settings], prompt: str, expected: str) -> None:
    with gateway(make_settings()) as client:
        r = client.post("/route", json={"prompt": prompt}, headers=CLIENT_AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == expected
    assert body["lambda"] == 10.0 and body["preset"] == "default"
    assert body["ranking"][0] == expected and len(body["ranking"]) == 3
    assert "orphan-model" not in body["ranking"] and "orphan-model" not in body["models"]  # no backend
    assert set(body["models"]["large-model"]) == {"quality", "cost", "utility"}
    assert body["router_version"] == "fake-1" and body["cache"] == "miss" and body["routing_ms"] >= 0
    assert body["explanation"] is None


def test_route_lambda_preset_constraints_explain_and_cache(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings()) as client:
        post = lambda **b: client.post("/route", json=b, headers=CLIENT_AUTH).json()  # noqa: E731
        assert post(prompt="tell me a story", **{"lambda": 0})["model"] == "large-model"
        assert post(prompt="tell me a story", preset="cheap")["model"] == "small-model"
        assert post(prompt="tell me a story", models=["small-model", "large-model"])["model"] == "large-model"
        assert post(prompt="a hard proof", max_cost=0.01)["model"] == "medium-model"
        assert post(prompt="tell me a story", min_quality=0.8)["model"] == "large-model"
        assert post(prompt="a hard proof")["cache"] == "hit"  # scored once above, same routed text
        explained = post(prompt="a hard proof?", explain=True)
    assert explained["explanation"]["runner_up"] == "medium-model"
    assert explained["explanation"]["utility_margin"] == pytest.approx(0.95 - 0.3 - (0.4 - 0.05))
    names = [f["name"] for f in explained["explanation"]["features"]]
    assert "kw:hard" in names and "question" in names
    lo, hi = explained["explanation"]["lambda_interval"]
    assert lo == 0 and hi == pytest.approx((0.95 - 0.4) / (0.03 - 0.005))


# --- chat completions ------------------------------------------------------------------------------------
def test_chat_routed_forwards_with_upstream_id_key_and_extra_fields(
    make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    extra = {"temperature": 0.3, "tools": tools, "response_format": {"type": "json_object"}, "seed": 7, "x_vendor": [1]}
    with gateway(make_settings()) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"model": "router", "messages": [{"role": "user", "content": "a hard proof"}], **extra},
            headers={**CLIENT_AUTH, "x-request-id": "req-123"},
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "large-model"  # our backend name, not the upstream id
    assert body["choices"][0]["message"]["content"] == "echo: a hard proof"
    assert r.headers["x-router-model"] == "large-model"
    assert r.headers["x-router-lambda"] == "10"
    assert r.headers["x-router-fallbacks"] == "0"
    assert float(r.headers["x-router-overhead-ms"]) >= 0
    assert r.headers["x-request-id"] == "req-123"
    (seen,) = upstream.received
    assert seen.body == {
        "model": "vendor/large-model",
        "messages": [{"role": "user", "content": "a hard proof"}],
        **extra,
    }
    assert seen.headers["authorization"] == "Bearer sk-upstream-SECRET-7f3a9c1e5b"
    assert seen.headers["x-request-id"] == "req-123"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("router:quality", "large-model"),
        ("router:cheap", "small-model"),
        ("router:0", "large-model"),
        ("router:1e6", "small-model"),
        ("medium-model", "medium-model"),
        ("big", "large-model"),
    ],
)
def test_chat_model_names(make_settings: Callable[..., Settings], model: str, expected: str) -> None:
    with gateway(make_settings(aliases={"big": "large-model"})) as client:
        r = chat(client, "tell me a story", model=model)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == expected == r.headers["x-router-model"]
    assert ("x-router-lambda" in r.headers) == model.startswith("router")


def test_backend_named_by_alias(make_settings: Callable[..., Settings]) -> None:
    backends = {"small-model": "ok", "medium-model": "ok", "big": "ok"}
    with gateway(make_settings(backends=backends, aliases={"big": "large-model"})) as client:
        r = chat(client, "a hard proof")
        models = client.get("/v1/models", headers=CLIENT_AUTH).json()
    assert r.json()["model"] == "big"
    assert [m["id"] for m in models["data"]] == [
        "router",
        "router:cheap",
        "router:default",
        "router:quality",
        "small-model",
        "medium-model",
        "big",
    ]
    assert models["object"] == "list" and all(m["object"] == "model" for m in models["data"])


@pytest.mark.parametrize("failure", ["refused", "hang", "e429", "e500"])
def test_fallback_to_next_in_ranking(
    make_settings: Callable[..., Settings], upstream: FakeUpstream, failure: str
) -> None:
    settings = make_settings(backends={"small-model": "ok", "medium-model": "ok", "large-model": failure})
    with gateway(settings) as client:
        r = chat(client, "a hard proof")  # ranks large, medium, small
        metrics = client.get("/metrics").text
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "medium-model" == r.headers["x-router-model"]
    assert r.headers["x-router-fallbacks"] == "1"
    reason = {"refused": "connect", "hang": "timeout", "e429": "429", "e500": "5xx"}[failure]
    assert f'sae_router_fallbacks_total{{model="large-model",reason="{reason}"}} 1.0' in metrics
    assert upstream.behaviors()[-1] == "ok"


def test_fallback_budget_and_final_status(make_settings: Callable[..., Settings], upstream: FakeUpstream) -> None:
    every = {"small-model": "e500", "medium-model": "e500", "large-model": "e500"}
    with gateway(make_settings(backends=every, fallback={"max_attempts": 2, "total_timeout_s": 5})) as client:
        r = chat(client, "a hard proof")
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "upstream_error"
    assert r.headers["x-router-fallbacks"] == "2"
    assert len(upstream.received) == 2  # max_attempts


@pytest.mark.parametrize(
    ("behavior", "status", "code"),
    [
        ("hang", 504, "upstream_timeout"),
        ("refused", 502, "upstream_unavailable"),
        ("e500", 502, "upstream_unavailable"),
        ("e429", 429, "upstream_rate_limited"),
        ("e401", 502, "upstream_unavailable"),
    ],
)
def test_pass_through_failures_map_to_status(
    make_settings: Callable[..., Settings], behavior: str, status: int, code: str
) -> None:
    with gateway(make_settings(backends={"medium-model": behavior, "large-model": "ok"})) as client:
        r = chat(client, "hi", model="medium-model")  # a named backend: no fallback
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    if behavior == "e429":
        assert r.headers["retry-after"] == "7"


def test_upstream_client_error_is_relayed(make_settings: Callable[..., Settings], upstream: FakeUpstream) -> None:
    with gateway(make_settings(backends={"medium-model": "e400", "large-model": "ok"})) as client:
        r = chat(client, "hi")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools"
    assert len(upstream.received) == 1  # a 400 is the caller's problem: no fallback


def test_total_deadline_bounds_fallback(make_settings: Callable[..., Settings], upstream: FakeUpstream) -> None:
    every = {"small-model": "hang", "medium-model": "hang", "large-model": "hang"}
    with gateway(make_settings(backends=every, fallback={"max_attempts": 3, "total_timeout_s": 0.8})) as client:
        r = chat(client, "a hard proof")
    assert r.status_code == 504
    assert len(upstream.received) == 2  # 0.5 s + the 0.3 s left; no third attempt


def test_backend_concurrency_cap(make_settings: Callable[..., Settings], upstream: FakeUpstream) -> None:
    settings = make_settings(backends={"medium-model": "slow", "large-model": "ok"})
    capped = [b.model_copy(update={"max_concurrency": 1, "timeout_s": 5}) for b in settings.backends]
    with gateway(settings.model_copy(update={"backends": capped})) as client, ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: chat(client, "hi", model="medium-model").status_code, range(4)))
    assert codes == [200] * 4
    assert len(upstream.received) == 4 and upstream.max_inflight == 1


# --- usage -------------------------------------------------------------------------------------------------
def test_usage_per_key(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings()) as client:
        for _ in range(2):
            assert chat(client, "a hard proof").status_code == 200
        mine = client.get("/v1/usage", headers=CLIENT_AUTH).json()
        theirs = client.get("/v1/usage", headers={"authorization": f"Bearer {OTHER_KEY}"}).json()
    assert mine["key"] == "team-a" and mine["requests"] == 2
    assert (mine["tokens_in"], mine["tokens_out"]) == (22, 14)  # from the upstream's usage
    assert mine["estimated_spend_usd"] == pytest.approx(2 * (11 * 1.0 + 7 * 2.0) / 1e6)
    assert mine["models"]["large-model"]["requests"] == 2
    assert mine["store"] == "memory"
    assert theirs["key"] == "team-b" and theirs["requests"] == 0


def test_spend_prices_fall_back_to_the_router_then_its_prediction(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    unpriced = [b.model_copy(update={"price_in_per_mtok": None, "price_out_per_mtok": None}) for b in settings.backends]
    with gateway(settings.model_copy(update={"backends": unpriced})) as client:
        for prompt in ("an easy one", "tell me a story", "a hard proof"):  # small, medium, large
            assert chat(client, prompt).status_code == 200
        spend = {
            m: u["estimated_spend_usd"]
            for m, u in client.get("/v1/usage", headers=CLIENT_AUTH).json()["models"].items()
        }
    assert spend["small-model"] == pytest.approx((11 * 0.1 + 7 * 0.2) / 1e6)  # the router's token prices
    assert spend["medium-model"] == pytest.approx(0.004)  # the router's per-call price
    assert spend["large-model"] == pytest.approx(0.03)  # no price anywhere: the predicted cost


# --- health ------------------------------------------------------------------------------------------------
def test_health_ready_and_metrics(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        chat(client, "a hard proof")
        metrics = client.get("/metrics").text
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["router"]["warm"] and body["router"]["worker"] == "in-process"
    assert body["excluded_models"] == ["orphan-model"]
    assert body["backends"] == ["small-model", "medium-model", "large-model"]
    assert body["redis"].startswith("disabled")
    for line in (
        'sae_router_requests_total{endpoint="/v1/chat/completions",model="large-model",status="200"} 1.0',
        'sae_router_cache_total{result="miss"} 1.0',
        "sae_router_routing_seconds_count 1.0",
        "sae_router_batch_size_count",
        'sae_router_upstream_seconds_count{model="large-model",outcome="ok"} 1.0',
        'sae_router_estimated_cost_usd_total{model="large-model"}',
        'sae_router_tokens_total{direction="in",model="large-model"} 11.0',
        "sae_router_redis_degraded 0.0",
    ):
        assert line in metrics, line


# --- errors ------------------------------------------------------------------------------------------------
def _post(client: TestClient, path: str, content: bytes | str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        path, content=content, headers={**CLIENT_AUTH, "content-type": "application/json", **(headers or {})}
    )


ERRORS = [
    # (path, body, status, param or code)
    ("/v1/chat/completions", "{not json", 400, "invalid_json"),
    ("/v1/chat/completions", "[1, 2]", 400, "invalid_json"),
    ("/v1/chat/completions", '{"model": "router", "messages": []}', 422, "messages"),
    ("/v1/chat/completions", '{"model": "router"}', 422, "messages"),
    ("/v1/chat/completions", '{"model": "router", "messages": "hi"}', 422, "messages"),
    (
        "/v1/chat/completions",
        '{"model": "router", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        422,
        "stream",
    ),
    ("/v1/chat/completions", '{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 422, "model"),
    (
        "/v1/chat/completions",
        '{"model": "router", "messages": [{"role": "wizard", "content": "x"}]}',
        422,
        "messages.0.role",
    ),
    ("/v1/chat/completions", '{"model": "router", "messages": [{"role": "system", "content": "x"}]}', 400, "messages"),
    (
        "/v1/chat/completions",
        '{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "model_not_found",
    ),
    (
        "/v1/chat/completions",
        '{"model": "router:turbo", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "model_not_found",
    ),
    ("/v1/chat/completions", '{"model": "router:-1", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    ("/v1/chat/completions", '{"model": "router:nan", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
    (
        "/v1/chat/completions",
        '{"model": "orphan-model", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "model_not_found",
    ),
    ("/route", '{"prompt": "x", "lambda": -1}', 422, "lambda"),
    ("/route", '{"prompt": "x", "lambda": "1"}', 422, "lambda"),
    ("/route", '{"prompt": "x", "preset": "turbo"}', 400, "model_not_found"),
    ("/route", '{"prompt": "x", "lambda": 1, "preset": "cheap"}', 422, "invalid_value"),
    ("/route", '{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}', 422, "invalid_value"),
    ("/route", "{}", 422, "invalid_value"),
    ("/route", '{"prompt": "x", "models": ["gpt-9"]}', 400, "model_not_found"),
    ("/route", '{"prompt": "x", "max_cost": 0.00001}', 400, "no_eligible_model"),
    ("/route", '{"prompt": "x", "bogus": 1}', 422, "bogus"),
    (
        "/v1/chat/completions",
        '{"model": "router", "messages": [{"role": "user", "content": "x"}], "top_p": NaN}',
        400,
        "invalid_json",
    ),
    ("/route", "[" * 50_000 + "]" * 50_000, 400, "invalid_json"),
]


@pytest.mark.parametrize(("path", "body", "status", "where"), ERRORS)
def test_errors_are_openai_shaped(
    make_settings: Callable[..., Settings], path: str, body: str, status: int, where: str
) -> None:
    with gateway(make_settings()) as client:
        r = _post(client, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert where in (error["param"], error["code"]), error


def test_body_size_limits(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings(max_body_bytes=2048)) as client:
        big = '{"model": "router", "messages": [{"role": "user", "content": "' + "x" * 4000 + '"}]}'
        by_header = _post(client, "/v1/chat/completions", big)

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted while read
            yield big[:1000].encode()
            yield big[1000:].encode()

        by_reading = client.post("/v1/chat/completions", content=chunks(), headers=CLIENT_AUTH)
        bad_length = _post(client, "/v1/chat/completions", "{}", headers={"content-length": "abc"})
    for r in (by_header, by_reading):
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
    assert bad_length.status_code == 400


def test_unknown_path_and_method(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings()) as client:
        missing = client.get("/v2/nothing")
        wrong = client.get("/v1/chat/completions", headers=CLIENT_AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_engine_failure_is_a_500_without_details(make_settings: Callable[..., Settings]) -> None:
    engine = FakeEngine()
    with gateway(make_settings(), engine) as client:
        engine.fail = True
        r = client.post("/route", json={"prompt": "x"}, headers=CLIENT_AUTH)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "routing_failed" and "exploded" not in r.text


# --- auth --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}],
)
def test_auth_required(make_settings: Callable[..., Settings], headers: dict[str, str]) -> None:
    with gateway(make_settings()) as client:
        for method, path in (
            ("post", "/route"),
            ("post", "/v1/chat/completions"),
            ("get", "/v1/models"),
            ("get", "/v1/usage"),
        ):
            r = client.request(method, path, json={"prompt": "x"}, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_auth_off_for_local_use(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings(auth={"require_auth": False})) as client:
        r = client.post("/route", json={"prompt": "x"})
        usage = client.get("/v1/usage").json()
    assert r.status_code == 200 and usage["key"] == "anonymous"


def test_rate_limits_in_process(make_settings: Callable[..., Settings]) -> None:
    limits = {"requests_per_min": 3, "tokens_per_min": 0}
    with gateway(make_settings(rate_limit=limits)) as client:
        codes = [client.post("/route", json={"prompt": "x"}, headers=CLIENT_AUTH).status_code for _ in range(4)]
        last = client.post("/route", json={"prompt": "x"}, headers=CLIENT_AUTH)
        other = client.post("/route", json={"prompt": "x"}, headers={"authorization": f"Bearer {OTHER_KEY}"})
    assert codes == [200, 200, 200, 429]
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
    assert last.json()["error"]["type"] == "rate_limit_error"
    assert other.status_code == 200  # limits are per key


def test_token_limit(make_settings: Callable[..., Settings]) -> None:
    with gateway(make_settings(rate_limit={"tokens_per_min": 40})) as client:
        first = chat(client, "a hard proof")  # ~3 tokens estimated, 18 counted after the upstream's usage
        second = chat(client, "a hard proof")
        third = chat(client, "x" * 200)  # 50 estimated: over the limit on its own
    assert first.status_code == 200 and second.status_code == 200
    assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limit_exceeded"


def test_missing_upstream_key_in_warn_mode_routes_but_chat_names_the_variable(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """missing_api_keys: warn lets a newcomer start without provider keys: routing works, chat says what to set."""
    monkeypatch.delenv("FAKE_UPSTREAM_KEY", raising=False)
    with pytest.raises(ValueError, match="FAKE_UPSTREAM_KEY is not set"):
        make_settings()
    with gateway(make_settings(missing_api_keys="warn")) as client:
        assert client.post("/route", json={"prompt": "a hard proof"}, headers=CLIENT_AUTH).status_code == 200
        r = chat(client, "a hard proof")
    assert r.status_code == 502
    assert "set FAKE_UPSTREAM_KEY" in r.json()["error"]["message"]

"""``/ui``'s files and JSON endpoints without a browser: auth, OpenAI-style errors, no secrets, the numbers.

The live summary is checked against traffic the test sends (and its quantiles against hand-computed
histogram interpolation); the router summary against the served engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, UPSTREAM_SECRET, FakeEngine, FakeUpstream

from service.core.config import Settings
from service.core.metrics import Metrics
from service.live import LiveWindow, bucket_quantile, read_registry, summarize
from service.main import create_app


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(backends={"small-model": "ok", "medium-model": "ok", "large-model": "e500"})
    with TestClient(create_app(settings, FakeEngine())) as c:
        yield c


def test_the_page_is_served_with_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert '<script type="module" src="/ui/app.js">' in page.text
    for name in ("app.js", "playground.js", "decide.js", "router.js", "live.js", "api.js", "dom.js", "style.css"):
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith("text/css" if name.endswith(".css") else "text/javascript")
    assert "http" not in client.get("/ui/index.html").text.replace('"http://www.w3.org', "")  # nothing external


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/..%2Fmain.py", "/ui/main.py", "/ui/.env"])
def test_unknown_files_are_openai_style_404s(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/ui/api/router", "/ui/api/live"])
def test_the_data_endpoints_need_a_key(client: TestClient, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    wrong = client.get(path, headers={"authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
    assert client.get(path, headers=CLIENT_AUTH).status_code == 200


def test_router_summary_names_models_backends_and_presets_without_secrets(
    client: TestClient, upstream: FakeUpstream
) -> None:
    r = client.get("/ui/api/router", headers=CLIENT_AUTH)
    body = r.json()
    engine = FakeEngine()
    assert body["version"] == engine.version and body["worker"] == "in-process"
    assert [m["name"] for m in body["models"]] == list(engine.models)
    small = body["models"][0]
    assert small["backend"] == "small-model" and small["upstream_model"] == "vendor/small-model"
    assert small["training_price"]["input_per_mtok"] == 0.1 and small["backend_price"]["input_per_mtok"] == 1.0
    assert body["excluded_models"] == ["orphan-model"]
    assert [(p["name"], p["lambda"]) for p in body["presets"]] == sorted(engine.presets.items(), key=lambda kv: kv[1])
    assert body["training"] is None and body["curve"] is None  # the fake has no training report
    assert UPSTREAM_SECRET not in r.text and upstream.url not in r.text and "FAKE_UPSTREAM_KEY" not in r.text


def test_live_summary_counts_the_gateways_own_traffic(client: TestClient) -> None:
    for prompt in ("easy one", "easy one", "a hard one"):  # one cache hit
        assert client.post("/route", json={"prompt": prompt}, headers=CLIENT_AUTH).status_code == 200
    chat = {"model": "router:quality", "messages": [{"role": "user", "content": "hard"}]}  # large fails over
    answered = client.post("/v1/chat/completions", json=chat, headers=CLIENT_AUTH)
    assert answered.status_code == 200 and answered.headers["x-router-fallbacks"] == "1"
    live = client.get("/ui/api/live", params={"window_s": 60}, headers=CLIENT_AUTH).json()
    backend = answered.headers["x-router-model"]
    assert live["since_start"] is True and live["window_s"] == 60
    assert live["decisions"]["small-model"] == {"route": 2, "chat": 0}
    assert live["decisions"]["large-model"]["route"] == 1
    assert live["decisions"][backend]["chat"] == 1
    assert live["requests"] == {"total": 4, "errors": 0, "by_status": {"200": 4}}
    assert live["cache"] == {"hits": 1, "misses": 3, "hit_rate": 0.25}
    assert live["fallbacks"]["total"] == 1 and list(live["fallbacks"]["by_model"]) == ["large-model"]
    assert live["spend_usd"]["total"] > 0 and set(live["spend_usd"]["by_model"]) == {backend}
    assert live["tokens"][backend] == {"in": 11, "out": 7}
    assert live["routing_latency"]["count"] == 4 and live["routing_latency"]["p50_ms"] is not None
    assert 0 < live["routing_latency"]["p50_ms"] <= live["routing_latency"]["p99_ms"]
    assert client.get("/ui/api/live", params={"window_s": 1}, headers=CLIENT_AUTH).status_code == 422


def test_bucket_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 5.0), (0.2, 10.0), (math.inf, 10.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.99, buckets) == pytest.approx(0.1 + 0.1 * 4.9 / 5)
    assert bucket_quantile(0.99, [(0.1, 0.0), (0.2, 2.0), (math.inf, 4.0)]) == pytest.approx(0.2)  # in +Inf
    assert bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_the_window_subtracts_the_snapshot_from_window_s_ago() -> None:
    metrics = Metrics.create()
    window = LiveWindow(metrics, spacing_s=5)
    metrics.cache.labels("hit").inc(3)
    first = window.summary(60, now=1000.0)
    assert first["since_start"] and first["cache"]["hits"] == 3
    metrics.cache.labels("miss").inc()
    metrics.routing_seconds.observe(0.003)
    assert window.summary(60, now=1030.0)["cache"]["hits"] == 3  # no snapshot 60 s old yet: since start
    metrics.cache.labels("hit").inc(2)
    later = window.summary(60, now=1070.0)  # baseline: the snapshot at 1000 (newest at or before 1010)
    assert later["since_start"] is False and later["span_s"] == 70.0
    assert later["cache"] == {"hits": 2, "misses": 1, "hit_rate": round(2 / 3, 4)}
    assert later["routing_latency"]["count"] == 1
    assert 2.5 < later["routing_latency"]["p50_ms"] <= 5.0  # inside the (2.5 ms, 5 ms] bucket


def test_summarize_reads_every_metric_the_live_page_shows() -> None:
    metrics = Metrics.create()
    metrics.requests.labels("/route", "m1", "200").inc()
    metrics.requests.labels("/route", "", "400").inc()  # refused before a model was chosen
    metrics.requests.labels("/healthz", "", "200").inc()  # not a decision
    metrics.rate_limited.labels("requests").inc()
    metrics.redis_degraded.set(1)
    out = summarize(read_registry(metrics.registry), {})
    assert out["decisions"] == {"m1": {"route": 1, "chat": 0}}
    assert out["requests"] == {"total": 2, "errors": 1, "by_status": {"200": 1, "400": 1}}
    assert out["rate_limited"] == {"requests": 1} and out["redis_degraded"] is True
    assert out["cache"]["hit_rate"] is None and out["routing_latency"]["p99_ms"] is None

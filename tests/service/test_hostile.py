"""Hostile input against one real gateway (uvicorn on 127.0.0.1, fake upstream): never a 5xx, always the
OpenAI error body, and no URL from a request is ever fetched.

- Generated: bodies drawn from the request schemas the gateway publishes in ``/openapi.json`` (hypothesis, with
  the small JSON-schema walker :func:`from_schema` below: the subset pydantic emits), mixed with arbitrary
  JSON objects and arbitrary bytes. 2,000 cases in the default run, 5,000 more in the ``slow`` one;
  derandomized, so a failure reproduces.
- Hand-written: 10 MB bodies (413, with and without Content-Length), deep nesting, invalid UTF-8, NUL bytes,
  100k-message arrays, NaN and negative λ, header injection through model names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_fakes import (
    CLIENT_AUTH,
    CLIENT_KEY,
    UPSTREAM_SECRET,
    FakeEngine,
    FakeUpstream,
    serve,
    serving,
    sha256,
    wait_ready,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.core.config import Settings
from service.main import create_app

CHAT = "/v1/chat/completions"
JSON = {**CLIENT_AUTH, "content-type": "application/json"}


@pytest.fixture(scope="module")
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_SECRET)
        settings = Settings(
            backends=[
                {"name": n, "base_url": f"{upstream.url}/ok/v1", "api_key_env": "FAKE_UPSTREAM_KEY", "timeout_s": 2}
                for n in ("small-model", "medium-model", "large-model")
            ],
            auth={"api_keys": [{"name": "team-a", "sha256": sha256(CLIENT_KEY)}]},
            batching={"max_batch": 16, "max_wait_ms": 1},
            server={"request_log": "errors"},
        )
    app = create_app(settings, FakeEngine())
    with serving(app, settings.server) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        wait_ready(c)
        yield c


def assert_clean(r: httpx.Response) -> None:
    """No 5xx; an error is the OpenAI body; every response carries its request id."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers.get("x-request-id")
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)


# --- generated -----------------------------------------------------------------------------------------------
def body_schema(client: httpx.Client, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]
    return dict(schema["content"]["application/json"]["schema"])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["model", "messages", "prompt", "lambda", "preset", "models", "stream", "role", "content"])


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for ``schema`` (type, enum, anyOf, $ref to $defs, properties/required, items/minItems,
    minLength); bounds on numbers are left out on purpose, so near-misses are drawn too."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        props = {k: from_schema(v, defs) for k, v in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kind == "array":
        items = from_schema(schema["items"], defs) if "items" in schema else JSON_VALUES
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=4)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=40)
    simple: dict[str, st.SearchStrategy[Any]] = {
        "object": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
        "number": st.floats(allow_nan=False, allow_infinity=False),
        "integer": st.integers(),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return simple.get(kind, JSON_VALUES) if isinstance(kind, str) else JSON_VALUES


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Valid-by-schema bodies, near-misses (known keys, any values), any JSON, and any bytes."""
    return st.one_of(
        from_schema(schema).map(lambda b: json.dumps(b).encode()),
        st.dictionaries(KEYS, JSON_VALUES, max_size=5).map(lambda b: json.dumps(b).encode()),
        JSON_VALUES.map(lambda b: json.dumps(b).encode()),
        st.binary(max_size=200),
    )


def check_endpoint(client: httpx.Client, path: str, cases: int) -> None:
    @hsettings(
        max_examples=cases, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=bodies(body_schema(client, path)))
    def check(body: bytes) -> None:
        assert_clean(client.post(path, content=body, headers=JSON))

    check()


@pytest.mark.parametrize("path", ["/route", CHAT])
@pytest.mark.parametrize(
    "cases", [pytest.param(1000, id="1000-cases"), pytest.param(2_500, id="2500-cases", marks=pytest.mark.slow)]
)
def test_generated_bodies_never_give_a_5xx(client: httpx.Client, path: str, cases: int) -> None:
    check_endpoint(client, path, cases)


# --- hand-written --------------------------------------------------------------------------------------------
TEN_MB = b'{"model": "router", "messages": [{"role": "user", "content": "' + b"x" * 10_000_000 + b'"}]}'


def test_ten_megabyte_bodies_are_413(client: httpx.Client) -> None:
    r = client.post(CHAT, content=TEN_MB, headers=JSON)
    assert_clean(r)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while reading
        for i in range(0, len(TEN_MB), 1 << 20):
            yield TEN_MB[i : i + (1 << 20)]

    r = client.post(CHAT, content=chunked(), headers=JSON)
    assert_clean(r)
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, id="deep-object"),
        pytest.param(b"[" * 50_000 + b"]" * 50_000, 400, id="deep-array"),
        pytest.param(
            b'{"model": "router", "x": ' + b"[" * 3000 + b"]" * 3000 + b', "messages": [{"role": "user"}]}',
            400,
            id="deep-extra-field",
        ),
        pytest.param(b'{"model": "router", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, id="bad-utf8"),
        pytest.param(b'{"model": "router", "messages": [{"role": "user", "content": "a\x00b"}]}', 400, id="raw-nul"),
        pytest.param(
            b'{"model": "small\\u0000model", "messages": [{"role": "user", "content": "hi"}]}', 400, id="nul-model"
        ),
        pytest.param(
            b'{"model": "router", "messages": [{"role": "user", "content": "a\\u0000b"}]}', 200, id="nul-text"
        ),
        pytest.param(b'{"model": "router:nan", "messages": [{"role": "user", "content": "hi"}]}', 400, id="nan-model"),
        pytest.param(b'{"model": "router:-1", "messages": [{"role": "user", "content": "hi"}]}', 400, id="neg-model"),
        pytest.param(
            b'{"model": "router:1e999", "messages": [{"role": "user", "content": "hi"}]}', 400, id="inf-model"
        ),
    ],
)
def test_hand_written_chat_bodies(client: httpx.Client, body: bytes, status: int) -> None:
    r = client.post(CHAT, content=body, headers=JSON)
    assert_clean(r)
    assert r.status_code == status


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"prompt": "x", "lambda": NaN}', 400),
        (b'{"prompt": "x", "lambda": Infinity}', 400),
        (b'{"prompt": "x", "lambda": -1}', 422),
        (b'{"prompt": "x", "lambda": -0.0}', 200),
        (b'{"prompt": "x", "max_cost": -5}', 422),
        (b'{"prompt": "x", "lambda": "1"}', 422),
    ],
)
def test_nan_and_negative_lambda(client: httpx.Client, body: bytes, status: int) -> None:
    r = client.post("/route", content=body, headers=JSON)
    assert_clean(r)
    assert r.status_code == status


def test_a_hundred_thousand_messages(client: httpx.Client, upstream: FakeUpstream) -> None:
    messages = [{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(100_000)]
    r = client.post(CHAT, json={"model": "router", "messages": messages}, headers=CLIENT_AUTH)
    assert_clean(r)
    assert r.status_code == 200 and len(upstream.received[-1].body["messages"]) == 100_000
    routed = client.post("/route", json={"messages": messages}, headers=CLIENT_AUTH)
    assert routed.status_code == 200 and routed.json()["routed_chars"] < 2000  # last turn + bounded context


@pytest.mark.parametrize(
    "model", ["small-model\r\nx-evil: 1", "small-model\nx-evil: 1", "router:cheap\r\n\r\nHTTP/1.1 200 OK"]
)
def test_header_injection_through_model_names(client: httpx.Client, upstream: FakeUpstream, model: str) -> None:
    r = client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers=CLIENT_AUTH)
    assert_clean(r)
    assert r.status_code == 400 and "x-evil" not in r.headers and upstream.received == []
    routed = client.post("/route", json={"prompt": "x", "models": [model]}, headers=CLIENT_AUTH)
    assert routed.status_code == 400 and "x-evil" not in routed.headers


def test_no_url_from_a_request_is_ever_fetched(client: httpx.Client, upstream: FakeUpstream) -> None:
    hits: list[str] = []

    async def record(request: Request) -> Response:
        hits.append(request.url.path)
        return Response("{}", media_type="application/json")

    canary = Starlette(routes=[Route("/{p:path}", record, methods=["GET", "POST"])])
    with serve(canary) as url:
        image = {"type": "image_url", "image_url": {"url": f"{url}/image.png"}}
        attempts: list[dict[str, Any]] = [
            {"model": f"{url}/v1", "messages": [{"role": "user", "content": "hi"}]},
            {"model": "router", "base_url": url, "messages": [{"role": "user", "content": [image]}]},
            {"model": "router", "messages": [{"role": "user", "content": f"fetch {url}/x please"}], "api_base": url},
            {"model": "small-model", "messages": [{"role": "user", "content": "hi"}], "tools": [{"url": url}]},
        ]
        codes = []
        for body in attempts:
            extra = {"x-forwarded-host": url, "x-original-url": url, "referer": url}
            r = client.post(CHAT, json=body, headers={**CLIENT_AUTH, **extra})
            assert_clean(r)
            codes.append(r.status_code)
        client.post("/route", json={"prompt": url, "models": [url]}, headers=CLIENT_AUTH)
    assert hits == []
    assert codes == [400, 200, 200, 200]  # forwarded to the configured backend only
    assert all(r.behavior == "ok" for r in upstream.received)

"""The gateway on a real socket (uvicorn in a thread) with the real ``openai`` SDK as client: sync, async and
streaming; SSE relayed chunk by chunk, in order and complete; fallback before the first byte, never after."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from gateway_fakes import CLIENT_AUTH, CLIENT_KEY, STREAM_WORDS, FakeEngine, FakeUpstream, serve

from service.core.config import Settings
from service.main import create_app

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a hard proof"}]
EXPECTED_TEXT = "".join(STREAM_WORDS)


@pytest.fixture
def gateway_url(make_settings: Callable[..., Settings], request: pytest.FixtureRequest) -> Iterator[str]:
    backends = getattr(request, "param", None)
    with serve(create_app(make_settings(backends=backends), FakeEngine())) as url:
        yield url


def sdk(url: str, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10)


def test_sdk_sync(gateway_url: str, upstream: FakeUpstream) -> None:
    with sdk(gateway_url) as client:
        raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES, temperature=0.2)
        completion = raw.parse()
        models = client.models.list()
    assert completion.model == "large-model"
    assert completion.choices[0].message.content == "echo: a hard proof"
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert raw.headers["x-router-model"] == "large-model" and raw.headers["x-router-fallbacks"] == "0"
    assert upstream.received[0].body["temperature"] == 0.2
    assert upstream.received[0].body["messages"] == MESSAGES  # system prompt forwarded, only routing ignores it
    assert "router:quality" in [m.id for m in models.data]


def test_sdk_async(gateway_url: str) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            prompts = ["an easy one", "tell me a story", "a hard proof"]
            done = await asyncio.gather(
                *(
                    client.chat.completions.create(model="router", messages=[{"role": "user", "content": p}])
                    for p in prompts
                )
            )
            return [c.model for c in done]

    assert asyncio.run(main()) == ["small-model", "medium-model", "large-model"]


def test_sdk_streaming(gateway_url: str, upstream: FakeUpstream) -> None:
    with sdk(gateway_url) as client:
        stream = client.chat.completions.create(
            model="router", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        usage = client.with_options().get("/usage", cast_to=object)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_TEXT
    assert {c.model for c in chunks} == {"large-model"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert upstream.received[0].body["stream_options"] == {"include_usage": True}
    assert isinstance(usage, dict) and (usage["tokens_in"], usage["tokens_out"]) == (5, 6)


def test_sdk_errors(gateway_url: str) -> None:
    with sdk(gateway_url, key="sk-wrong") as client, pytest.raises(openai.AuthenticationError) as auth:
        client.chat.completions.create(model="router", messages=MESSAGES)
    assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"
    with sdk(gateway_url) as client, pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert bad.value.code == "model_not_found"


def _events(lines: Iterator[str]) -> Iterator[dict[str, object] | str]:
    for line in lines:
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            yield payload if payload == "[DONE]" else json.loads(payload)


@pytest.mark.parametrize("gateway_url", [{"large-model": "gated", "medium-model": "ok"}], indirect=True)
def test_stream_is_not_buffered(gateway_url: str, upstream: FakeUpstream) -> None:
    body = {"model": "router", "messages": MESSAGES, "stream": True}
    t0 = time.monotonic()
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, headers=CLIENT_AUTH, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-router-model"] == "large-model"
        events = _events(r.iter_lines())
        first = next(events)
        # The upstream is now parked until we open the gate: this chunk came through on its own.
        assert not upstream.gate.is_set() and time.monotonic() - t0 < 4
        upstream.release()
        rest = list(events)
    assert isinstance(first, dict) and first["model"] == "large-model"
    content = [e["choices"][0]["delta"].get("content", "") for e in rest if isinstance(e, dict)]  # type: ignore[index]
    assert "".join(content) == EXPECTED_TEXT
    assert rest[-1] == "[DONE]"


@pytest.mark.parametrize("gateway_url", [{"large-model": "e500", "medium-model": "ok"}], indirect=True)
def test_stream_falls_back_before_first_byte(gateway_url: str, upstream: FakeUpstream) -> None:
    with sdk(gateway_url) as client:
        raw = client.chat.completions.with_raw_response.create(model="router", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == EXPECTED_TEXT
    assert raw.headers["x-router-model"] == "medium-model" and raw.headers["x-router-fallbacks"] == "1"
    assert upstream.behaviors() == ["e500", "ok"]


@pytest.mark.parametrize("gateway_url", [{"large-model": "midstream", "medium-model": "ok"}], indirect=True)
def test_no_fallback_after_first_byte(gateway_url: str, upstream: FakeUpstream) -> None:
    received: list[str] = []
    with sdk(gateway_url) as client, pytest.raises(openai.APIError, match="interrupted"):
        for chunk in client.chat.completions.create(model="router", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "".join(STREAM_WORDS[:2])  # what came before the break, in order
    assert upstream.behaviors() == ["midstream"]  # never retried elsewhere
    metrics = httpx.get(f"{gateway_url}/metrics").text
    assert 'sae_router_stream_interrupted_total{model="large-model"} 1.0' in metrics


def test_stream_pass_through_to_named_backend(gateway_url: str, upstream: FakeUpstream) -> None:
    body = {"model": "small-model", "messages": MESSAGES, "stream": True, "n": 1}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, headers=CLIENT_AUTH, timeout=10) as r:
        events = list(_events(r.iter_lines()))
    assert r.headers["x-router-model"] == "small-model" and "x-router-lambda" not in r.headers
    assert {e["model"] for e in events if isinstance(e, dict)} == {"small-model"}
    assert upstream.received[0].body["model"] == "vendor/small-model" and upstream.received[0].body["n"] == 1

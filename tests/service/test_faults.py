"""Fault injection, bounded and on loopback only: every way an upstream, Redis or the feature worker can fail.

For each fault the client (the real ``openai`` SDK) gets either one complete answer from a fallback backend or
exactly one OpenAI-style error with the right status; nothing waits past the configured timeouts (backends:
0.5 s per attempt, 5 s over all attempts); usage is recorded for every answer; the metrics count the fault.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_fakes import (
    CLIENT_KEY,
    FakeEngine,
    FakeUpstream,
    RedisServer,
    chat,
    free_port,
    gateway,
    metric,
    redis_requests,
    serving,
    wait_ready,
)

from service.core.config import Settings
from service.main import create_app
from service.worker_app import create_worker_app

SettingsFactory = Callable[..., Settings]
HARD = [{"role": "user", "content": "a hard proof"}]  # routed large-model first, then medium-model
ATTEMPT_S = 0.5  # make_settings' per-attempt timeout


@pytest.fixture(scope="module")
def blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: connecting to it times out (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.1)
    yield port
    for c in fillers:
        c.close()
    listener.close()


def fault_settings(make_settings: SettingsFactory, blackhole: int, fault: str, **extra: Any) -> Settings:
    settings = make_settings({"large-model": fault, "medium-model": "ok", "small-model": "ok"}, **extra)
    if fault != "blackhole":
        return settings
    values = settings.model_dump()
    values["backends"][0]["base_url"] = f"http://127.0.0.1:{blackhole}/v1"
    return Settings(**values)


def sdk(client: httpx.Client) -> openai.OpenAI:
    base = str(client.base_url).rstrip("/") + "/v1"
    return openai.OpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=10)


# fault -> the fallback reason counted for large-model, without and with stream=True (None: no fallback)
BEFORE_FIRST_BYTE = {
    "e500": ("5xx", "5xx"),
    "e502": ("5xx", "5xx"),
    "e503": ("5xx", "5xx"),
    "e429": ("429", "429"),
    "e401": ("auth", "auth"),
    "e403": ("auth", "auth"),
    "refused": ("connect", "connect"),
    "blackhole": ("timeout", "timeout"),  # connect timeout
    "hang": ("timeout", "timeout"),  # read timeout: stalls before the headers
    "badjson": ("bad_response", "bad_response"),
    "wrongtype": (None, "bad_response"),  # a JSON completion answering a stream request
    "badsse": (None, "bad_response"),
}


def usage_once_recorded(client: httpx.Client) -> dict[str, Any]:
    """``/v1/usage`` once it counts a request (at most 2 s). A stream's usage is recorded when the gateway's
    generator finishes, which can be just after the client has read the last chunk; the caller then checks
    it counts exactly one request."""
    deadline = time.monotonic() + 2
    while True:
        usage: dict[str, Any] = client.get("/v1/usage", headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
        if usage["requests"] >= 1 or time.monotonic() > deadline:
            return usage
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fault", list(BEFORE_FIRST_BYTE))
def test_a_failing_backend_falls_back_to_the_next(
    make_settings: SettingsFactory, upstream: FakeUpstream, blackhole: int, fault: str, stream: bool
) -> None:
    reason = BEFORE_FIRST_BYTE[fault][stream]
    with gateway(fault_settings(make_settings, blackhole, fault)) as client, sdk(client) as oa:
        t0 = time.monotonic()
        if stream:
            chunks = list(oa.chat.completions.create(model="router", messages=HARD, stream=True))  # type: ignore[arg-type]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            model = chunks[0].model
        else:
            reply = oa.chat.completions.create(model="router", messages=HARD)  # type: ignore[arg-type]
            text, model = reply.choices[0].message.content or "", reply.model
        elapsed = time.monotonic() - t0
        usage = usage_once_recorded(client)
        counted = metric(client, f'sae_router_fallbacks_total{{model="large-model",reason="{reason}"}}')
    assert text
    assert elapsed < ATTEMPT_S * 2 + 1  # one timed-out attempt at most, then the fallback
    assert usage["requests"] == 1
    if reason is None:
        assert model == "large-model"
    else:
        assert model == "medium-model" and counted == 1


# fault -> (status, code) when it is the only backend (pass-through to it by name)
ONLY_BACKEND = {
    "e500": (502, "upstream_unavailable"),
    "e503": (502, "upstream_unavailable"),
    "e429": (429, "upstream_rate_limited"),
    "e401": (502, "upstream_unavailable"),
    "refused": (502, "upstream_unavailable"),
    "blackhole": (504, "upstream_timeout"),
    "hang": (504, "upstream_timeout"),
    "badjson": (502, "upstream_unavailable"),
}


@pytest.mark.parametrize("fault", list(ONLY_BACKEND))
def test_a_failing_only_backend_gives_exactly_one_error(
    make_settings: SettingsFactory, upstream: FakeUpstream, blackhole: int, fault: str
) -> None:
    status, code = ONLY_BACKEND[fault]
    with gateway(fault_settings(make_settings, blackhole, fault)) as client, sdk(client) as oa:
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            oa.chat.completions.create(model="large-model", messages=HARD)  # type: ignore[arg-type]
        elapsed = time.monotonic() - t0
        usage = client.get("/v1/usage", headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
    assert caught.value.status_code == status and caught.value.code == code
    assert elapsed < ATTEMPT_S + 1
    assert usage["requests"] == 0  # nothing was answered, nothing is billed
    if fault == "e429":
        assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("fault", "code"),
    [("midstream", "stream_interrupted"), ("stall", "stream_interrupted"), ("badsse_mid", "bad_upstream_event")],
)
def test_a_stream_failing_after_the_first_byte_ends_with_one_error_event(
    make_settings: SettingsFactory, upstream: FakeUpstream, blackhole: int, fault: str, code: str
) -> None:
    with gateway(fault_settings(make_settings, blackhole, fault)) as client, sdk(client) as oa:
        t0 = time.monotonic()
        got: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for c in oa.chat.completions.create(model="router", messages=HARD, stream=True):  # type: ignore[arg-type]
                got.extend(ch.delta.content or "" for ch in c.choices)
        elapsed = time.monotonic() - t0
        usage = usage_once_recorded(client)
        interrupted = metric(client, 'sae_router_stream_interrupted_total{model="large-model"}')
    assert "".join(got).startswith("Hello")  # what arrived before the fault was relayed
    assert caught.value.code == code
    assert elapsed < ATTEMPT_S + 1.5
    assert usage["requests"] == 1 and interrupted == 1  # the part that was streamed is billed


def test_redis_stopped_and_restarted_under_steady_traffic(
    make_settings: SettingsFactory, own_redis: RedisServer
) -> None:
    settings = make_settings(redis_url=own_redis.url, redis_retry_max_s=0.2)
    codes: list[int] = []
    stop = threading.Event()
    cond = threading.Condition()
    paused, inflight = False, 0
    with gateway(settings) as client:

        def traffic() -> None:
            nonlocal inflight
            with httpx.Client(base_url=client.base_url, timeout=5) as own:
                while not stop.is_set():
                    with cond:
                        cond.wait_for(lambda: not paused)
                        inflight += 1
                    try:
                        codes.append(chat(own, f"steady {len(codes)}").status_code)
                    finally:
                        with cond:
                            inflight -= 1
                            cond.notify_all()

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        # Traffic pauses while `before` is read and Redis stops: on a fast machine requests answered between the
        # two would land in the old Redis and be lost with it (hundreds in the ~0.1 s a stop takes).
        with cond:
            paused = True
            cond.wait_for(lambda: inflight == 0)
        time.sleep(0.2)  # the last usage writes land
        before = redis_requests(own_redis.url, settings.redis_prefix)  # lost with Redis: it keeps no data
        own_redis.stop()
        with cond:
            paused = False
            cond.notify_all()
        time.sleep(1.0)
        own_redis.start()
        time.sleep(1.0)
        stop.set()
        for w in workers:
            w.join()
        deadline = time.monotonic() + 30  # the replay is due within ~redis_retry_max_s; slack for a loaded CI
        while redis_requests(own_redis.url, settings.redis_prefix) < len(codes) - before - 8:
            assert time.monotonic() < deadline, "usage counted during the outage did not reach Redis"
            time.sleep(0.05)
        assert metric(client, "sae_router_redis_degraded ") == 0
    assert len(codes) > 20 and set(codes) == {200}
    # Redis restarted empty: it must hold every request answered after `before` was read (the outage's,
    # replayed, and the later ones); the slack of 8 is for usage writes still in flight at the pause
    after = redis_requests(own_redis.url, settings.redis_prefix)
    assert len(codes) - before - 8 <= after <= len(codes) - before


def test_worker_killed_and_restarted_under_load(make_settings: SettingsFactory, upstream: FakeUpstream) -> None:
    port = free_port()
    worker_settings = make_settings()
    settings = make_settings(
        worker_url=f"http://127.0.0.1:{port}", worker_timeout_s=1, routing={"unavailable_backend": "small-model"}
    )
    results: list[tuple[int, str, bool]] = []

    def burst(client: httpx.Client, n: int) -> None:
        for i in range(n):
            r = chat(client, f"a hard proof {len(results)} {i}")
            results.append((r.status_code, r.headers.get("x-router-model", ""), "x-router-lambda" in r.headers))

    worker = create_worker_app(worker_settings, FakeEngine())
    gateway_app = create_app(settings)
    with serving(gateway_app, settings.server) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        with serving(worker, worker_settings.server, port=port):
            wait_ready(client)
            burst(client, 5)
        burst(client, 5)  # the worker is gone: routed requests go to routing.unavailable_backend
        down = metric(client, "sae_router_router_unavailable_total")
        with serving(create_worker_app(worker_settings, FakeEngine()), worker_settings.server, port=port):
            burst(client, 5)
    assert all(code == 200 for code, _, _ in results)
    assert [m for _, m, _ in results[:5]] == ["large-model"] * 5 and all(routed for *_, routed in results[:5])
    assert [m for _, m, _ in results[5:10]] == ["small-model"] * 5 and not any(r for *_, r in results[5:10])
    assert down == 5
    assert [m for _, m, _ in results[10:]] == ["large-model"] * 5  # recovered: routed again

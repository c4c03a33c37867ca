"""Bring-up of deploy/docker-compose.yml: build, ``up --wait``, use both gateways, ``down -v``.

Needs a working Docker engine with Compose v2 (marker ``docker``; skipped, with the reason, where there is none).
Run: ``.venv/bin/pytest -m docker -s tests/test_bringup.py`` (the first build takes minutes; ``-s`` prints the
build and bring-up times). The image's torch comes from ``TORCH_INDEX_URL`` as in the compose file; set it empty
where the PyTorch index is unreachable (pip's find-links then provide the wheel, as ``.ci/run`` does).

Checked through the published loopback ports only: ``POST /route`` and an ``openai``-SDK chat (plain and streaming)
on each gateway (answered by the example upstream, no key anywhere); a per-key limit used up on gateway-1 is
enforced by gateway-2 (shared Redis); Prometheus has scraped both gateways and the worker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
LIMITED_KEY = "sk-example-limited"  # deploy/config.example-upstream.yaml: 3 requests a minute
LIMIT = 3

pytestmark = pytest.mark.docker


def _docker_unavailable() -> str | None:
    """Why the bring-up cannot run here, or None when a Docker engine and Compose v2 answer."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    for cmd in (["docker", "info"], ["docker", "compose", "version"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out"
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-200:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    gateways: tuple[str, str]  # base URLs of gateway-1 and gateway-2
    prometheus: str
    build_s: float
    up_s: float


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(f"needs a working Docker engine with Compose v2: {reason}")
    ports = [_free_port() for _ in range(3)]
    env = {
        **os.environ,
        "SAE_ROUTER_PORT_1": str(ports[0]),
        "SAE_ROUTER_PORT_2": str(ports[1]),
        "PROMETHEUS_PORT": str(ports[2]),
    }
    env.pop("OPENROUTER_API_KEY", None)  # the point: it works with no key at all
    env.pop("SAE_ROUTER_GATEWAY_CONFIG", None)
    compose = ["docker", "compose", "-p", f"sae-router-test-{os.getpid()}", "-f", str(COMPOSE_FILE)]

    def run(*args: str, timeout: float) -> float:
        start = time.perf_counter()
        proc = subprocess.run([*compose, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"docker compose {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return time.perf_counter() - start

    build_s = run("build", timeout=1800)
    try:
        up_s = run("up", "--detach", "--wait", "--wait-timeout", "600", timeout=700)
        print(f"\n[bring-up] build {build_s:.0f} s, up --wait {up_s:.0f} s")
        urls = tuple(f"http://127.0.0.1:{p}" for p in ports[:2])
        yield Stack((urls[0], urls[1]), f"http://127.0.0.1:{ports[2]}", build_s, up_s)
    except BaseException:
        logs = subprocess.run([*compose, "logs", "--tail", "40"], env=env, capture_output=True, text=True)
        print(logs.stdout[-6000:])
        raise
    finally:
        run("down", "-v", "--remove-orphans", timeout=300)


def test_route_on_both_gateways(stack: Stack) -> None:
    for url in stack.gateways:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        reply = httpx.post(f"{url}/route", json={"prompt": "Solve 12 * 7 and explain."}, timeout=60)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] in body["ranking"] and body["router_version"]


def test_openai_chat_plain_and_streaming_on_both_gateways(stack: Stack) -> None:
    import openai

    for url in stack.gateways:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="router", messages=[{"role": "user", "content": "2+2?"}])
        assert "[example upstream" in (reply.choices[0].message.content or "")
        assert reply.model  # the backend the router chose
        chunks = client.chat.completions.create(
            model="router", messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "you said: Say hello" in text


def test_a_key_limit_used_up_on_one_gateway_holds_on_the_other(stack: Stack) -> None:
    import openai

    first, second = (
        openai.OpenAI(base_url=f"{url}/v1", api_key=LIMITED_KEY, max_retries=0, timeout=60) for url in stack.gateways
    )
    messages = [{"role": "user", "content": "count me"}]
    for _ in range(LIMIT):
        first.chat.completions.create(model="router", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        second.chat.completions.create(model="router", messages=messages)  # type: ignore[arg-type]
    # Anonymous callers have no limit in this config: gateway-2 itself still serves.
    anonymous = openai.OpenAI(base_url=f"{stack.gateways[1]}/v1", api_key="unused", max_retries=0, timeout=60)
    anonymous.chat.completions.create(model="router", messages=messages)  # type: ignore[arg-type]


def test_prometheus_scraped_both_gateways_and_the_worker(stack: Stack) -> None:
    want = {"gateway-1:8080", "gateway-2:8080", "worker:8081"}
    deadline, up = time.monotonic() + 60, set()
    while time.monotonic() < deadline:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        if want <= up:
            break
        time.sleep(2)
    assert want <= up, up
    import openai

    messages = [{"role": "user", "content": "scrape me"}]
    for url in stack.gateways:  # one request each, so that both have a request counter to scrape
        anonymous = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        anonymous.chat.completions.create(model="router", messages=messages)  # type: ignore[arg-type]
    # A gateway's request counter appears at the first scrape after its first request: wait for that scrape.
    query = 'sum by (instance) (sae_router_requests_total{job="sae-router-gateway"})'
    deadline = time.monotonic() + 30  # 6 scrape intervals (deploy/prometheus.yml: 5 s)
    while True:
        result = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
        instances = {r["metric"]["instance"] for r in result["data"]["result"]}
        if instances == {"gateway-1:8080", "gateway-2:8080"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert instances == {"gateway-1:8080", "gateway-2:8080"}, result

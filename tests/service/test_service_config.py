"""Settings: YAML + env precedence, fail-fast refusals with clear messages, and the deploy/ examples."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.catalog import build_catalog
from service.core.config import Settings
from service.core.errors import ConfigError
from service.engine import load_engine

ROOT = Path(__file__).resolve().parents[2]
# The default router's pool: zeroeval_gsm_math models with results on both of its tasks.
ZEROEVAL_MODELS = (
    "Athene-70B",
    "Llama-3.1-405B-Inst@sambanova",
    "Meta-Llama-3-70B-Instruct",
    "Meta-Llama-3-8B-Instruct",
    "Meta-Llama-3.1-70B-Instruct",
    "Meta-Llama-3.1-8B-Instruct",
    "Mistral-Large-2",
    "Phi-3.5-mini-instruct",
    "Qwen2-72B-Instruct",
    "Qwen2-7B-Instruct",
    "Yi-1.5-34B-Chat",
    "Yi-1.5-9B-Chat",
    "claude-3-5-sonnet-20240620",
    "claude-3-haiku-20240307",
    "claude-3-opus-20240229",
    "deepseek-v2.5-0908",
    "gemini-1.5-flash",
    "gemini-1.5-pro",
    "gemma-2-27b-it",
    "gemma-2-2b-it",
    "gemma-2-9b-it",
    "gpt-3.5-turbo-0125",
    "gpt-4o-2024-05-13",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "o1-mini-2024-09-12",
    "reka-core-20240501",
)
BACKEND = {"name": "m", "base_url": "http://127.0.0.1:9/v1"}
NO_AUTH = {"require_auth": False}


def test_yaml_then_env_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "port": 9000,
                "batching": {"max_batch": 4, "max_wait_ms": 9},
                "auth": NO_AUTH,
                "backends": [BACKEND],
            }
        )
    )
    monkeypatch.setenv("SAE_ROUTER_CONFIG", str(config))
    monkeypatch.setenv("SAE_ROUTER_PORT", "9100")
    monkeypatch.setenv("SAE_ROUTER_BATCHING__MAX_BATCH", "7")
    s = Settings(log_level="DEBUG")
    assert (s.port, s.batching.max_batch, s.batching.max_wait_ms, s.log_level) == (9100, 7, 9, "DEBUG")
    assert s.backends[0].name == "m" and s.backends[0].model_id == "m"


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAE_ROUTER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Settings()


def test_a_config_file_is_passed_not_written_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from service.cli import main

    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"port": 9000, "auth": NO_AUTH, "backends": [BACKEND]}))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"port": 9001, "auth": NO_AUTH}))
    monkeypatch.setenv("SAE_ROUTER_CONFIG", str(other))
    monkeypatch.setenv("SAE_ROUTER_CACHE", str(tmp_path / "cache"))
    s = Settings.load(config, log_level="DEBUG")  # the explicit file wins over $SAE_ROUTER_CONFIG
    assert (s.port, s.log_level, s.backends[0].name, s.cache) == (9000, "DEBUG", "m", tmp_path / "cache")
    assert Settings().port == 9001 and os.environ["SAE_ROUTER_CONFIG"] == str(other)
    with pytest.raises(FileNotFoundError, match=r"--config=.*nope\.yaml"):
        Settings.load(tmp_path / "nope.yaml")
    assert main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err and os.environ["SAE_ROUTER_CONFIG"] == str(other)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"artifact": "/no/such/router"}, "artifact '/no/such/router' is not a directory"),
        ({"backends": [{**BACKEND, "base_url": "ftp://x/v1"}]}, "absolute http(s) URL"),
        ({"backends": [{**BACKEND, "base_url": "localhost:8000"}]}, "absolute http(s) URL"),
        ({"backends": [BACKEND, BACKEND]}, "duplicate backend name(s): ['m']"),
        ({"backends": [{**BACKEND, "name": "router:x"}]}, "clash with the router's own model names"),
        ({"backends": [{**BACKEND, "api_key_env": "NOT_SET_ANYWHERE"}]}, "NOT_SET_ANYWHERE is not set"),
        ({"backends": [{**BACKEND, "api_key_env": "sk-abc123"}]}, "NAME of an environment variable"),
        ({"backends": [{**BACKEND, "price": 1}]}, "Extra inputs are not permitted"),
        ({"auth": {"require_auth": True}}, "auth.api_keys is empty"),
        ({"auth": {"api_keys": [{"name": "a", "sha256": "sk-plaintext"}]}}, "64 lowercase hex"),
        ({"routing": {"max_chars": 100, "head_chars": 100}}, "head_chars must be smaller"),
        ({"redis_url": "localhost:6379"}, "redis_url must start with"),
        ({"worker_url": "not a url"}, "absolute http(s) URL"),
        ({"feature_runtime": "tensorrt"}, "Input should be 'auto', 'onnx' or 'torch'"),
    ],
)
def test_refuses_bad_config(values: dict[str, Any], message: str) -> None:
    values = {"auth": NO_AUTH, **values}
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(**values)


def test_auth_is_required_by_default() -> None:
    with pytest.raises(ValidationError, match="require_auth is true"):
        Settings()


def test_catalog_refusals() -> None:
    b = Settings(auth=NO_AUTH, backends=[BACKEND, {**BACKEND, "name": "n"}]).backends
    with pytest.raises(ConfigError, match="'n' is not a model of the router"):
        build_catalog(b, {}, ["m"])
    with pytest.raises(ConfigError, match="both serve router model 'm'"):
        build_catalog(b, {"n": "m"}, ["m"])
    with pytest.raises(ConfigError, match="alias 'x' -> 'zz'"):
        build_catalog(b[:1], {"x": "zz"}, ["m"])
    with pytest.raises(ConfigError, match="no backend is configured"):
        build_catalog([], {}, ["m"])


def test_load_engine_needs_an_artifact() -> None:
    with pytest.raises(ConfigError, match="SAE_ROUTER_ARTIFACT"):
        load_engine(Settings(auth=NO_AUTH))


@pytest.mark.parametrize(("blas_threads", "expected"), [(1, 1), (0, 2)])
def test_load_engine_holds_numpy_blas_to_blas_threads(blas_threads: int, expected: int) -> None:
    """A scoring process runs numpy's BLAS on ``blas_threads`` threads (0 leaves the library's own count)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=None, user_api="blas"):  # restores this process's BLAS threads afterwards
        threadpool_limits(2, user_api="blas")
        settings = Settings(auth=NO_AUTH, artifact=ROOT / "artifacts/default-router", blas_threads=blas_threads)
        load_engine(settings)
        counts = {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
    assert counts == {expected}


@pytest.mark.parametrize("name", ["config.example.yaml", "config.local.example.yaml"])
def test_deploy_examples_load(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAE_ROUTER_CONFIG", str(ROOT / "deploy" / name))
    monkeypatch.setenv("SAE_ROUTER_ARTIFACT", str(tmp_path))  # the example's runs/router need not exist here
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    s = Settings()
    catalog = build_catalog(s.backends, s.aliases, ZEROEVAL_MODELS)
    assert set(catalog.allowed) | set(catalog.excluded) == set(ZEROEVAL_MODELS)
    if name == "config.example.yaml":
        assert len(catalog.allowed) == len(s.backends) and catalog.backend("sonnet") == "claude-3-5-sonnet-20240620"
        assert s.backend_api_key("gpt-4o-2024-08-06") == "sk-or-test"
    else:
        assert len(catalog.allowed) == 3 and s.backend_api_key("gemma-2-9b-it") is None


def test_settings_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "sk-very-secret")
    s = Settings(auth=NO_AUTH, backends=[{**BACKEND, "api_key_env": "K"}])
    assert s.backend_api_key("m") == "sk-very-secret"
    for text in (repr(s), str(s), str(s.describe()), s.model_dump_json()):
        assert "sk-very-secret" not in text

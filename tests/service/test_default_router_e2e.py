"""The bundled default router end to end: its real backbone and SAE behind the gateway, served by
uvicorn on loopback, a fake OpenAI-compatible upstream, and the real ``openai`` SDK as the client. Plus the
``sae-router route`` and ``eval --artifact`` CLIs on the same artifact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_fakes import CLIENT_KEY, FakeUpstream, serve, wait_ready

from router_models.artifact.load import load_router
from router_models.cli import main
from router_models.features.onnx_runtime import onnx_available
from router_models.router import TrainedRouter
from service.core.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "artifacts" / "default-router"
SHARED = ROOT.parent / "shared" / "data" / "routing" / "zeroeval_gsm_math.parquet"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEFAULT / "manifest.json").exists(), reason="no bundled default router"),
]


def _has_probe() -> bool:
    """Whether the default router carries an SAE probe (its logit decomposition is then in explanations too)."""
    return bool(json.loads((DEFAULT / "manifest.json").read_text()).get("probe"))


@pytest.fixture(scope="module")
def router() -> TrainedRouter:
    return load_router(DEFAULT)


@pytest.fixture(scope="module")
def gateway_url(
    router: TrainedRouter, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    backends = [
        {"name": m, "base_url": f"{upstream.url}/ok/v1", "upstream_model": f"vendor/{m}"} for m in router.models
    ]
    settings = Settings(backends=backends, auth={"require_auth": False})  # type: ignore[arg-type]
    with serve(create_app(settings, router)) as url:
        with httpx.Client(base_url=url) as client:  # the port opens before the router is warm: wait for /readyz
            wait_ready(client, timeout_s=600)
        yield url


def test_routes_real_prompts_with_named_features(gateway_url: str) -> None:
    import httpx

    hard = "Let $f(x)=x^3-3x+1$. Find the number of real roots of $f(f(x))=0$."
    r = httpx.post(f"{gateway_url}/route", json={"prompt": hard, "explain": True}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] in body["models"] and body["ranking"][0] == body["model"]
    if _has_probe():
        feats = body["explanation"]["probe"]["features"]
        assert feats and all({"latent", "label", "activation", "contribution"} <= set(f) for f in feats)
    cited = body["explanation"]["features"]  # by measured effect on the served margin: every one lowers it
    assert cited and all(f["label"] and f["delta_utility_margin"] < 0 for f in cited)
    assert body["explanation"]["deletion"]["dense_edited"] is True
    cheap = httpx.post(f"{gateway_url}/route", json={"prompt": hard, "lambda": 1e9}, timeout=60).json()
    quality = httpx.post(f"{gateway_url}/route", json={"prompt": hard, "lambda": 0}, timeout=60).json()
    cost = {m: v["cost"] for m, v in quality["models"].items()}
    assert cost[cheap["model"]] == min(cost.values())  # λ → ∞ takes the cheapest
    assert cost[quality["model"]] >= cost[cheap["model"]]


def test_openai_sdk_chat_and_stream_through_the_default_router(gateway_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway_url}/v1", api_key=CLIENT_KEY, max_retries=0)
    messages = [{"role": "user", "content": "Natalia sold 48 clips in April and half as many in May. Total?"}]
    reply = client.chat.completions.with_raw_response.create(model="router", messages=messages)  # type: ignore[arg-type]
    completion = reply.parse()
    assert completion.model == reply.headers["x-router-model"]
    chunks = list(client.chat.completions.create(model="router:cheap", messages=messages, stream=True))  # type: ignore[arg-type]
    assert chunks and all(c.model == chunks[0].model for c in chunks)
    listed = {m.id for m in client.models.list()}
    assert {"router", "router:cheap", "router:balanced"} <= listed


def test_cli_route_prints_decision_and_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "What is 17 * 23?", "--preset", "cheap"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] in out["models"] and out["explanation"]["features"]
    assert out["explanation"]["probe"]["features"] if _has_probe() else "probe" not in out["explanation"]


def test_cli_and_http_give_the_same_explanation(gateway_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    prompt = "Find all real x with x^2 - 5x + 6 = 0."
    for preset in ("cheap", "quality"):
        assert main(["route", prompt, "--preset", preset]) == 0
        cli = json.loads(capsys.readouterr().out)
        http = httpx.post(
            f"{gateway_url}/route", json={"prompt": prompt, "preset": preset, "explain": True}, timeout=60
        )
        assert http.status_code == 200, http.text
        body = http.json()
        assert body["model"] == cli["model"] and body["lambda"] == cli["lambda"]
        assert body["explanation"] == cli["explanation"]
        assert cli["explanation"]["utility_margin"] is not None and cli["explanation"]["features"]


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime, onnx and onnxscript are not installed")
def test_onnx_runtime_reproduces_the_recorded_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway's CPU default (feature_runtime auto = ONNX) predicts and decides as the torch path that
    recorded check.json: the same decisions on every recorded prompt and preset, qualities within 1e-4."""
    assert main(["verify", "--runtime", "onnx"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["flipped"] == 0 and out["max_quality_diff"] < 1e-4, out


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime, onnx and onnxscript are not installed")
def test_gateway_loads_the_default_router_on_the_onnx_runtime(router: TrainedRouter, upstream: FakeUpstream) -> None:
    """Settings' default feature_runtime ("auto") on a CPU: /readyz says onnx, and /route decides as torch does."""
    backends = [{"name": m, "base_url": f"{upstream.url}/ok/v1"} for m in router.models]
    settings = Settings(artifact=DEFAULT, backends=backends, auth={"require_auth": False})  # type: ignore[arg-type]
    assert settings.feature_runtime == "auto"
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        wait_ready(client, timeout_s=600)
        assert client.get("/readyz").json()["router"]["runtime"] == "onnx"
        for prompt in ("Write a haiku about autumn rain.", "Let $x^2 = 2$. Is $x$ rational?", "hi"):
            for preset in ("cheap", "default", "quality"):
                body = client.post("/route", json={"prompt": prompt, "preset": preset}).json()
                torch_decision = router.decide(prompt, preset)
                assert body["model"] == torch_decision.model, (prompt, preset)


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared routing data")
def test_cli_eval_artifact_on_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--artifact",
                str(DEFAULT),
                "--data",
                str(SHARED),
                "--max-test",
                "60",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["n_test"] <= 60 and "sae-router" in report["routers"]
    assert report["routers"]["sae-router"]["peak_quality"] <= report["reference"]["oracle"]["quality"] + 1e-9


def test_verify_reproduces_the_recorded_check(capsys: pytest.CaptureFixture[str]) -> None:
    """The installed (locked) libraries reproduce the default router's recorded predictions and decisions; an
    upgrade that moves its features fails here, not silently in production."""
    assert main(["verify", "--artifact", str(DEFAULT)]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["n_prompts"] >= 40 and out["flipped"] == 0

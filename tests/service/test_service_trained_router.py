"""The gateway serving a real ``TrainedRouter`` (router_models.selection.fit_router on the shared synthetic
data, features from a keyword featurizer instead of a backbone): the engine contract end to end, in-process
and through the remote feature worker, explanations included. Plus the artifact-loading error path."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import CLIENT_AUTH, serve, wait_ready
from router_fakes import MODELS, PRICES, fast_candidates, make_routing, topic_features

from router_models.decide.engine import InvalidLambda, UnknownPreset
from router_models.features.pooling import PromptFeatures
from router_models.router import TrainedRouter
from router_models.train.selection import fit_router
from service.core.config import Settings
from service.core.errors import ConfigError
from service.engine import load_engine
from service.main import create_app
from service.worker_app import create_worker_app

TOPICS = ("greeting", "math", "code", "history")  # keyword -> synthetic topic 0..3


@pytest.fixture(scope="module")
def trained() -> TrainedRouter:
    syn = make_routing(120, seed=0)

    def featurize(texts: Sequence[str]) -> PromptFeatures:
        topic = np.array([next((k for k, w in enumerate(TOPICS) if w in t), 0) for t in texts])
        return topic_features(topic, syn.centres, syn.projection, np.random.default_rng(0))

    router, _ = fit_router(syn.features, syn.ds, prices=PRICES, candidates=fast_candidates(), featurize=featurize)
    return router


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(backends=dict.fromkeys(MODELS, "ok"))


def _exercise(client: TestClient) -> None:
    routed = client.post("/route", json={"prompt": "some code please", "explain": True}, headers=CLIENT_AUTH)
    assert routed.status_code == 200, routed.text
    body = routed.json()
    assert body["model"] in MODELS and sorted(body["ranking"]) == sorted(MODELS)
    explanation = body["explanation"]
    assert explanation["chosen"]["model"] == body["model"]  # the engine's own explanation, as it gave it
    assert explanation["runner_up"]["model"] == body["ranking"][1]
    assert explanation["utility_margin"] >= 0 and len(explanation["lambda_interval"]) == 2
    for preset in ("quality", "cheap"):
        r = client.post("/route", json={"prompt": "hi greeting", "preset": preset}, headers=CLIENT_AUTH)
        assert r.status_code == 200, r.text
    chat = {"model": "router", "messages": [{"role": "user", "content": "math: 2+2?"}]}
    answered = client.post("/v1/chat/completions", json=chat, headers=CLIENT_AUTH)
    assert answered.status_code == 200 and answered.headers["x-router-model"] in MODELS


def test_serves_a_trained_router_in_process(trained: TrainedRouter, settings: Settings) -> None:
    with TestClient(create_app(settings, trained)) as client:
        assert client.get("/readyz").json()["router"]["version"] == trained.version
        _exercise(client)


def test_serves_a_trained_router_through_the_worker(trained: TrainedRouter, settings: Settings) -> None:
    with serve(create_worker_app(settings, trained)) as worker_url:
        remote = settings.model_copy(update={"worker_url": worker_url})
        with TestClient(create_app(remote)) as client:
            wait_ready(client)
            assert client.get("/readyz").json()["router"]["worker"] == "remote"
            _exercise(client)


def test_the_gateway_explains_exactly_as_the_library_does(trained: TrainedRouter, settings: Settings) -> None:
    """One explanation path: ``TrainedRouter.decide(..., explain=True)`` (what ``sae-router route`` prints)
    and ``POST /route`` with ``explain`` give the same explanation for the same prompt and λ."""
    with TestClient(create_app(settings, trained)) as client:
        for prompt, lam in (("some code please", 0.0), ("hi greeting", 50.0), ("math and history", 1e9)):
            r = client.post("/route", json={"prompt": prompt, "lambda": lam, "explain": True}, headers=CLIENT_AUTH)
            assert r.status_code == 200, r.text
            library = trained.decide(prompt, lam, explain=True)
            assert r.json()["explanation"] == json.loads(json.dumps(library.explanation))
            assert library.explanation is not None and library.explanation["runner_up"]["model"] == library.ranking[1]


@pytest.mark.parametrize(("body", "param"), [({"lambda": -1.0}, "lambda"), ({"preset": "nope"}, "preset")])
def test_a_bad_lambda_or_preset_is_one_typed_error(
    trained: TrainedRouter, settings: Settings, body: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidLambda if param == "lambda" else UnknownPreset):
        trained.decide("hi", body.get("lambda", body.get("preset")))  # type: ignore[arg-type]
    with TestClient(create_app(settings, trained)) as client:
        r = client.post("/route", json={"prompt": "hi", **body}, headers=CLIENT_AUTH)
        assert r.status_code in (400, 404, 422) and r.json()["error"]["param"] == param, r.text
        bad_model = client.post(
            "/v1/chat/completions",
            json={"model": "router:-2", "messages": [{"role": "user", "content": "hi"}]},
            headers=CLIENT_AUTH,
        )
        assert bad_model.status_code == 400 and bad_model.json()["error"]["param"] == "model"


def test_unloadable_artifact_refuses_to_start(tmp_path: Path, settings: Settings) -> None:
    broken = settings.model_copy(update={"artifact": tmp_path})
    with pytest.raises(ConfigError, match=f"cannot serve router {tmp_path}"):
        load_engine(broken)
    with pytest.raises(ConfigError, match="cannot serve router"), TestClient(create_app(broken)):
        pass

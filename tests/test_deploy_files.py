"""Static checks of the deployment files: Dockerfile, docker compose, Kubernetes manifests (no Docker or cluster)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.catalog import build_catalog
from service.core.config import BackendSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DEFAULT_ROUTER = ROOT / "artifacts" / "default-router"
IMAGE_ROOT = "/app/"  # the Dockerfile's WORKDIR
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)  # e.g. OPENROUTER_API_KEY

K8S_KINDS = {
    "configmap.yaml": ["ConfigMap"],
    "secret.example.yaml": ["Secret"],
    "redis.yaml": ["Deployment", "Service"],
    "worker.yaml": ["Deployment", "Service"],
    "gateway.yaml": ["Deployment", "Service", "HorizontalPodAutoscaler"],
}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _k8s_all() -> list[dict[str, Any]]:
    return [d for name in sorted(K8S_KINDS) for d in _k8s(name)]


def _deployment(name: str) -> dict[str, Any]:
    (dep,) = [d for d in _k8s(name) if d["kind"] == "Deployment"]
    return dep


def _container(name: str) -> dict[str, Any]:
    (container,) = _deployment(name)["spec"]["template"]["spec"]["containers"]
    return container


def _config_arg(command: list[str]) -> Path:
    """The --config of a compose command, as a path in this checkout."""
    path = command[command.index("--config") + 1]
    assert path.startswith(IMAGE_ROOT), path
    return ROOT / path.removeprefix(IMAGE_ROOT)


def _configmap_config() -> dict[str, Any]:
    (cm,) = _k8s("configmap.yaml")
    data: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return data


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in list(os.environ):
        if var.startswith("SAE_ROUTER_") or var == "OPENROUTER_API_KEY":
            monkeypatch.delenv(var)
    return monkeypatch


# --- docker compose ------------------------------------------------------------------------------------


def test_compose_services_dependencies_and_ports() -> None:
    services = _compose()["services"]
    assert {"redis", "worker", "gateway"} <= set(services)
    assert services["redis"]["image"].startswith("redis:7")
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    gateway = services["gateway"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["depends_on"]["worker"]["condition"] == "service_healthy"
    assert any(str(p).endswith("8080:8080") for p in gateway["ports"])
    assert gateway["environment"]["SAE_ROUTER_REDIS_URL"].startswith("redis://redis:")
    assert gateway["environment"]["SAE_ROUTER_WORKER_URL"] == "http://worker:8081"
    assert gateway["environment"]["OPENROUTER_API_KEY"].startswith("${OPENROUTER_API_KEY:?")  # fail fast, no value
    for name in ("worker", "gateway"):
        service = services[name]
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert service["command"][0] == ("serve" if name == "gateway" else "worker")
        assert _config_arg(service["command"]).is_file()
        assert any("/readyz" in part for part in service["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["worker", "gateway"])
def test_compose_service_settings_are_valid(name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each service's config + environment builds Settings (the worker gets no upstream key)."""
    service = _compose()["services"][name]
    clean_env.setenv("SAE_ROUTER_CONFIG", str(_config_arg(service["command"])))
    for var, value in service["environment"].items():
        clean_env.setenv(var, "sk-test" if var == "OPENROUTER_API_KEY" else str(value))
    clean_env.setenv("SAE_ROUTER_ARTIFACT", str(tmp_path))  # the image's artifact is checked by the build
    settings = Settings()
    if name == "gateway":
        assert settings.redis_url is not None and settings.worker_url is not None
        assert all(settings.backend_api_key(b.name) == "sk-test" for b in settings.backends if b.api_key_env)


# --- Kubernetes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(K8S_KINDS))
def test_k8s_file_parses_with_expected_kinds(name: str) -> None:
    docs = _k8s(name)
    assert [d["kind"] for d in docs] == K8S_KINDS[name]
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"]


def test_k8s_covers_every_file() -> None:
    assert {p.name for p in K8S.glob("*.yaml")} == set(K8S_KINDS)


def test_k8s_selectors_match_pod_labels() -> None:
    docs = _k8s_all()
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for svc in (d for d in docs if d["kind"] == "Service"):
        matches = [labels for labels in pod_labels if svc["spec"]["selector"].items() <= labels.items()]
        assert len(matches) == 1, svc["metadata"]["name"]


@pytest.mark.parametrize("name", ["gateway.yaml", "worker.yaml"])
def test_k8s_probes(name: str) -> None:
    container = _container(name)
    assert container["image"] == "sae-router:latest"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert container[probe]["httpGet"]["port"] in port_names
    assert container["args"][0] == ("serve" if name == "gateway.yaml" else "worker")
    assert _deployment(name)["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_gateway_replicas_env_and_autoscaler() -> None:
    dep = _deployment("gateway.yaml")
    assert dep["spec"]["replicas"] == 2
    container = _container("gateway.yaml")
    env = {e["name"]: e for e in container["env"]}
    assert env["SAE_ROUTER_REDIS_URL"]["value"].startswith("redis://sae-router-redis:")
    assert env["SAE_ROUTER_WORKER_URL"]["value"] == "http://sae-router-worker:8081"
    assert env["OPENROUTER_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "sae-router-secrets"
    assert container["resources"]["requests"]["cpu"]
    (hpa,) = [d for d in _k8s("gateway.yaml") if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "# nvidia.com/gpu: 1" in (K8S / "worker.yaml").read_text()


def test_k8s_has_no_literal_secrets() -> None:
    (secret,) = _k8s("secret.example.yaml")
    assert secret["stringData"] == {"OPENROUTER_API_KEY": "REPLACE_ME"}
    assert "data" not in secret
    for doc in _k8s_all():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for e in container.get("env", []):
                assert not (SECRET_NAME.search(e["name"]) and "value" in e), e["name"]


def test_k8s_config_is_valid_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _configmap_config()
    assert config["artifact"] == "/app/artifacts/default-router"
    clean_env.setenv("OPENROUTER_API_KEY", "sk-test")
    Settings(**{**config, "artifact": tmp_path})
    mount = _container("gateway.yaml")["volumeMounts"][0]["mountPath"]
    for name in ("gateway.yaml", "worker.yaml"):
        args = _container(name)["args"]
        assert args[args.index("--config") + 1] == f"{mount}/config.yaml"


@pytest.mark.skipif(not (DEFAULT_ROUTER / "manifest.json").is_file(), reason="no bundled default router")
def test_gateway_configs_fit_the_default_router() -> None:
    """The backends the compose and k8s gateways serve are models of the bundled router (else never ready)."""
    models = [m["name"] for m in json.loads((DEFAULT_ROUTER / "manifest.json").read_text())["models"]]
    gateway = yaml.safe_load(_config_arg(_compose()["services"]["gateway"]["command"]).read_text())
    for config in (gateway, _configmap_config()):
        backends = [BackendSettings(**b) for b in config["backends"]]
        build_catalog(backends, config.get("aliases", {}), models)


# --- Dockerfile --------------------------------------------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[str]:
    """One string per instruction: comments dropped, backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def test_dockerfile_copies_the_router_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = _dockerfile_instructions(text)
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    sources = {src for args in copies for src in args[:-1]}
    assert {"router_models", "service", "artifacts/default-router", "deploy", "pyproject.toml"} <= sources
    assert {"requirements", "README.md"} <= sources
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["sae-router"]' in lines
    assert "SAE_ROUTER_CACHE=/var/cache/sae-router" in text
    assert "python -m router_models.assets --quiet" in text
    (healthcheck,) = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert "urllib" in healthcheck and "8080/healthz" in healthcheck
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!artifacts/default-router" in ignore and "!deploy" in ignore

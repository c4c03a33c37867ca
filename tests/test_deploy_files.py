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

OFFICIAL_IMAGES = ("python:3.11-slim", "redis:7-alpine", "prom/prometheus", "nginx")  # issue 12: nothing else
K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests must validate against (kubernetes-validate schemas)


def _compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    """Compose services with the x- anchors merged (yaml.safe_load resolves `<<`)."""
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _k8s_all() -> list[dict[str, Any]]:
    """Every object of the base folder (gpu/ holds a replacement of the worker Deployment, not an addition)."""
    return [d for path in sorted(K8S.glob("*.yaml")) for d in _k8s(path.name)]


def _deployment(name: str) -> dict[str, Any]:
    (dep,) = [d for d in _k8s(name) if d["kind"] == "Deployment"]
    return dep


def _container(name: str) -> dict[str, Any]:
    (container,) = _deployment(name)["spec"]["template"]["spec"]["containers"]
    return container


def _in_checkout(path: str) -> Path:
    """A path inside the image (/app/...), as a path in this checkout; a compose default (${VAR:-path}) unwrapped."""
    path = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", path)
    assert path.startswith(IMAGE_ROOT), path
    return ROOT / path.removeprefix(IMAGE_ROOT)


def _config_arg(command: list[str]) -> Path:
    """The --config of a compose command, as a path in this checkout."""
    return _in_checkout(command[command.index("--config") + 1])


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


def _gateways() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if s.get("command", [None])[0] == "serve"}


def test_compose_uses_only_official_images_or_the_project_image() -> None:
    for name, service in _services().items():
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
        else:
            assert service["image"].startswith(OFFICIAL_IMAGES), name


def test_compose_gateways_share_redis_and_the_worker_and_wait_for_them() -> None:
    services, gateways = _services(), _gateways()
    assert len(gateways) >= 2  # replicas, to show what they share
    (worker,) = [name for name, s in services.items() if s.get("command", [None])[0] == "worker"]
    for gateway in gateways.values():
        env = gateway["environment"]
        redis_host = env["SAE_ROUTER_REDIS_URL"].removeprefix("redis://").split(":")[0]
        worker_host = env["SAE_ROUTER_WORKER_URL"].removeprefix("http://").split(":")[0]
        assert (redis_host, worker_host) == ("redis", worker) and redis_host in services
        needed = {redis_host, worker_host} | {n for n, s in services.items() if "example_upstream" in str(s)}
        assert all(gateway["depends_on"][n]["condition"] == "service_healthy" for n in needed)
        assert any("/readyz" in part for part in gateway["healthcheck"]["test"])
    assert any("/readyz" in part for part in services[worker]["healthcheck"]["test"])
    assert all("healthcheck" in s for n, s in services.items()), "up --wait needs every service healthy"


def test_compose_publishes_on_loopback_only_and_holds_no_secret() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # no client keys required: never public
        for var, value in service.get("environment", {}).items():
            if SECRET_NAME.search(var):
                assert re.fullmatch(r"\$\{\w+:?-?\}", str(value)), (name, var)  # only passed through from the shell


@pytest.mark.parametrize("name", ["worker", "gateway-1", "gateway-2"])
def test_compose_service_settings_are_valid(name: str, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each service's config + environment builds Settings with no provider key set."""
    service = _services()[name]
    clean_env.setenv("SAE_ROUTER_CONFIG", str(_config_arg(service["command"])))
    for var, value in service.get("environment", {}).items():
        if not str(value).startswith("${"):
            clean_env.setenv(var, str(value))
    clean_env.setenv("SAE_ROUTER_ARTIFACT", str(tmp_path))  # the image's artifact is checked by the build
    settings = Settings()
    assert all(b.api_key_env is None for b in settings.backends)  # chat works with no key at all
    if name.startswith("gateway"):
        assert settings.redis_url is not None and settings.worker_url is not None


def test_prometheus_scrapes_every_gateway_and_the_worker() -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    services = _services()
    expected = {f"{name}:8080" for name in _gateways()}
    expected |= {f"{n}:8081" for n, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert targets == expected
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("./prometheus.yml:") for m in mounts)


def test_compose_gpu_override_reserves_a_gpu_for_the_worker_only() -> None:
    override = _compose("docker-compose.gpu.yml")["services"]
    assert set(override) == {"worker"}
    (device,) = override["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "TORCH_CUDA" in override["worker"]["build"]["args"]
    assert override["worker"]["image"] != _services()["worker"]["image"]  # the CPU image is not overwritten


# --- Kubernetes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _k8s_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_k8s_manifests_validate_against_the_schema(path: Path) -> None:
    """kubernetes-validate (offline JSON schemas of the API, strict: unknown fields are errors)."""
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert "namespace" not in doc["metadata"]  # kubectl -n picks it


def test_k8s_validator_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    (dep,) = [d for d in _k8s("gateway.yaml") if d["kind"] == "Deployment"]
    dep["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"  # misspelled field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_k8s_has_the_parts_the_deployment_needs() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _k8s_all()}
    for component in ("gateway", "worker", "redis"):
        assert ("Deployment", f"sae-router-{component}") in kinds and ("Service", f"sae-router-{component}") in kinds
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (kind, "sae-router-gateway") in kinds
    assert {k for k, _ in kinds} >= {"ConfigMap", "Secret"}


def test_k8s_selectors_match_pod_labels() -> None:
    docs = _k8s_all()
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for obj in (d for d in docs if d["kind"] in ("Service", "PodDisruptionBudget")):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matches = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matches) == 1, obj["metadata"]["name"]


@pytest.mark.parametrize("name", ["gateway.yaml", "worker.yaml", "gpu/worker.yaml"])
def test_k8s_probes_and_non_root(name: str) -> None:
    container = _container(name)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in container:
            assert container[probe]["httpGet"]["port"] in port_names
    assert container["args"][0] == ("serve" if name == "gateway.yaml" else "worker")
    pod = _deployment(name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]


def test_k8s_gateway_scales_and_survives_drains() -> None:
    docs = _k8s("gateway.yaml")
    dep = _deployment("gateway.yaml")
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always evict one pod
    assert _container("gateway.yaml")["resources"]["requests"]["cpu"]  # HPA utilization is relative to it
    services = {d["metadata"]["name"]: d for d in _k8s_all() if d["kind"] == "Service"}
    env = {e["name"]: e for e in _container("gateway.yaml")["env"]}
    for var in ("SAE_ROUTER_REDIS_URL", "SAE_ROUTER_WORKER_URL"):
        host, port = env[var]["value"].split("://")[1].split("/")[0].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, var
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 0


def test_k8s_gpu_worker_replaces_the_cpu_worker_on_a_gpu() -> None:
    cpu, gpu = _deployment("worker.yaml"), _deployment("gpu/worker.yaml")
    assert gpu["metadata"] == cpu["metadata"]  # same name and labels: applying it replaces the CPU worker
    assert gpu["spec"]["template"]["metadata"] == cpu["spec"]["template"]["metadata"]  # the Service finds it
    assert int(_container("gpu/worker.yaml")["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert "nvidia.com/gpu" not in str(cpu)
    assert _container("gpu/worker.yaml")["image"] != _container("worker.yaml")["image"]  # a CUDA build


def test_k8s_has_no_literal_secrets() -> None:
    secrets = [d for d in _k8s_all() if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert "data" not in secret
        assert all(not v.startswith("sk-") and len(v) < 20 for v in secret["stringData"].values())  # placeholders
    for doc in _k8s_all():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for e in container.get("env", []):
                assert not (SECRET_NAME.search(e["name"]) and "value" in e), e["name"]


def test_k8s_config_is_valid_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _configmap_config()
    assert (_in_checkout(config["artifact"]) / "manifest.json").is_file() or not DEFAULT_ROUTER.exists()
    clean_env.setenv("OPENROUTER_API_KEY", "sk-test")
    Settings(**{**config, "artifact": tmp_path})
    mount = _container("gateway.yaml")["volumeMounts"][0]["mountPath"]
    for name in ("gateway.yaml", "worker.yaml", "gpu/worker.yaml"):
        args = _container(name)["args"]
        assert args[args.index("--config") + 1] == f"{mount}/config.yaml"


@pytest.mark.skipif(not (DEFAULT_ROUTER / "manifest.json").is_file(), reason="no bundled default router")
def test_gateway_configs_fit_the_default_router() -> None:
    """The backends the compose and k8s gateways serve are models of the bundled router (else never ready)."""
    models = [m["name"] for m in json.loads((DEFAULT_ROUTER / "manifest.json").read_text())["models"]]
    configs = [yaml.safe_load(_config_arg(s["command"]).read_text()) for s in _gateways().values()]
    configs += [yaml.safe_load((DEPLOY / "config.default.yaml").read_text()), _configmap_config()]
    for config in configs:
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


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions, one list per stage (from its FROM)."""
    stages: list[list[str]] = []
    for line in _dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_and_the_runtime_is_lean_offline_and_non_root() -> None:
    stages = _stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    assert not any("pip install" in line for line in runtime)  # everything installed comes from the build stage
    copies = [line.split()[1:] for line in runtime if line.startswith("COPY ")]
    assert {"artifacts/default-router", "deploy"} <= {src for args in copies for src in args[:-1]}
    assert any(args[0].startswith("--from=") for args in copies)
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(line for line in runtime if line.startswith("ENV "))
    assert "HF_HUB_OFFLINE=1" in env  # no network at run time: weights are baked in, the hub is never asked
    (healthcheck,) = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert "/healthz" in healthcheck


def test_dockerfile_installs_the_serving_lock_hash_checked() -> None:
    build = " ".join(_stages()[0])
    assert "-r requirements/serve.txt" in build and "--require-hashes" in build
    assert "requirements/lock.txt" not in build  # the training stack stays out of the image
    assert "ARG TORCH_INDEX_URL" in build and "${TORCH_INDEX_URL:+" in build  # empty = skip the torch index
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0] == "*" or "*" in ignore  # an allowlist: .venv, .git, runs/ never reach the daemon
    assert "!artifacts/default-router" in ignore and "!deploy" in ignore

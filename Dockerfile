# sae-router: the gateway (`sae-router serve`) and the feature worker (`sae-router worker`) in one image,
# with the bundled default router (artifacts/default-router) and its packaged backbones baked in.
#
#   docker build -t sae-router:latest .
#   docker run --rm -p 127.0.0.1:8080:8080 -e OPENROUTER_API_KEY sae-router:latest   # config.default.yaml: no client keys
#
# Installs exactly requirements/lock.txt (hash-checked); torch comes from TORCH_INDEX_URL (CPU wheels by
# default, requirements/torch-cpu.txt pins the build). For a CUDA feature worker:
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (see deploy/README.md).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    SAE_ROUTER_CACHE=/var/cache/sae-router

WORKDIR /app

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app

COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY router_models ./router_models
COPY service ./service
RUN pip install --no-deps --require-hashes --extra-index-url "${TORCH_INDEX_URL}" -r requirements/torch-cpu.txt \
    && pip install --no-deps --require-hashes -r requirements/lock.txt \
    && pip install --no-deps --no-build-isolation . \
    && python -m router_models.assets --quiet \
    && chown -R app:app "${SAE_ROUTER_CACHE}"

COPY artifacts/default-router ./artifacts/default-router
COPY deploy ./deploy

USER 10001

EXPOSE 8080 8081

HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["sae-router"]
CMD ["serve", "--config", "/app/deploy/config.default.yaml", "--host", "0.0.0.0"]

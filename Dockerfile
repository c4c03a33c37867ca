# sae-router serving image: the gateway (`sae-router serve`) and the feature worker (`sae-router worker`), with the
# bundled default router (artifacts/default-router) and its backbone's weights baked in. Runs as uid 10001 and
# needs no network at run time (HF_HUB_OFFLINE). From the repository root:
#
#   docker build -t sae-router:latest .                                  # CPU torch from the PyTorch CPU index
#   docker build --build-arg TORCH_INDEX_URL= -t sae-router:latest .     # that index unreachable: torch from
#                                                                        # pip's find-links / PyPI instead
#   docker build --build-arg TORCH_CUDA=cu128 -t sae-router:cuda .       # CUDA torch for a GPU worker
#   docker run --rm -p 127.0.0.1:8080:8080 sae-router:latest             # config.default.yaml: no client keys
#
# Stage `build` installs, hash-checked and without resolving anything, requirements/torch-cpu.txt and
# requirements/serve.txt (core + the `serve` extra: no sae-lens, scikit-learn, pandas; scripts/lock.sh writes both)
# into /opt/venv, then sae-router itself, and fetches the artifact's backbone into $SAE_ROUTER_CACHE. Stage
# `runtime` copies the venv and the weights onto a fresh base: no pip cache, no build leftovers.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The CPU torch wheel's index; empty = none (the wheel then comes from pip's configured find-links or indexes).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A CUDA build of the locked torch version instead (e.g. cu128, matching the GPU nodes' driver); its own
# index, not hash-checked (the lock pins the CPU wheel), with its nvidia-* runtime libraries.
ARG TORCH_CUDA=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    SAE_ROUTER_CACHE=/var/cache/sae-router
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/torch-cpu.txt ./requirements/
# --no-compile: bytecode only for the modules serving imports (written below when they first run), not ~280 MB
# for all of torch, sympy and transformers.
RUN set -eu; \
    if [ -n "${TORCH_CUDA}" ]; then \
        version="$(sed -n 's/^torch==\([^+ ]*\).*/\1/p' requirements/torch-cpu.txt)"; \
        pip install --no-compile "torch==${version}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
            --extra-index-url https://pypi.org/simple; \
    else \
        pip install --no-compile --no-deps --require-hashes \
            ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements/torch-cpu.txt; \
    fi; \
    # C++ headers, test binaries and tests of torch: only for building extensions and torch's own test suite
    # (torch_shm_manager stays: `import torch` looks for it).
    torch="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch"; \
    rm -rf "$torch/include" "$torch/test"; \
    find "$torch/bin" -type f ! -name torch_shm_manager -delete
COPY requirements/serve.txt ./requirements/
RUN pip install --no-compile --no-deps --require-hashes -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY router_models ./router_models
COPY service ./service
COPY artifacts/default-router ./artifacts/default-router
# The backbone the bundled router names, fetched and converted once, stored compact (its GGUF blocks, lossless:
# router_models/compact_weights.py; the float32 file is rebuilt in /tmp at start). Then the serving imports, so
# their bytecode is in the image (the runtime user cannot write it).
RUN pip install --no-compile --no-deps --no-build-isolation . \
    && python -m router_models.assets --compact "$(python -c 'import json; print(json.load(open( \
        "artifacts/default-router/manifest.json"))["features"]["backbone"]["name"])')" \
    # The backbone's blocks exported to ONNX for the CPU fast path (feature_runtime auto), into the cache the
    # runtime user reads but cannot write; `verify` checks the router reproduces its recorded decisions on it.
    && sae-router verify --artifact artifacts/default-router --runtime onnx \
    && chmod -R a+rX "${SAE_ROUTER_CACHE}" \
    && python -c "import service.main, service.worker_app, router_models.artifact, router_models.features, uvicorn" \
    # Not needed to serve: the libraries' own test suites, and pip (nothing is installed at run time).
    && find /opt/venv -type d -name tests -prune -exec rm -rf {} + \
    && python -m pip uninstall -q -y pip

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAE_ROUTER_CACHE=/var/cache/sae-router \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /var/cache/sae-router /var/cache/sae-router
COPY artifacts/default-router ./artifacts/default-router
COPY deploy ./deploy
USER 10001
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["sae-router"]
CMD ["serve", "--config", "/app/deploy/config.default.yaml", "--host", "0.0.0.0"]

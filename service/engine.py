"""Loading the trained router: the one place the gateway and the feature worker get a ``RoutingEngine``.

In:  ``Settings.artifact`` (a trained router directory), ``Settings.blas_threads``. Out: a loaded ``RoutingEngine``
     (and numpy's BLAS held to ``blas_threads`` in this process).
Heavy (torch, the backbone, the SAE), so it is imported and called only inside the app's lifespan, in a
thread; ``create_app(settings, engine=...)`` skips it (tests inject their own engine). The backbone itself
loads on the first ``score_batch``, which the lifespan's warm-up batch triggers before serving.
"""

from __future__ import annotations

from router_models.decide.engine import RoutingEngine
from service.core.config import Settings
from service.core.errors import ConfigError

__all__ = ["load_engine"]


def load_engine(settings: Settings) -> RoutingEngine:
    if settings.artifact is None:
        raise ConfigError("no router to serve: set artifact (SAE_ROUTER_ARTIFACT) to a trained router directory")
    from router_models.artifact.format import ArtifactError
    from router_models.artifact.load import load_router  # lazy: torch and the backbone load here

    try:
        # TrainedRouter exposes version/presets as read-only properties while the RoutingEngine Protocol
        # declares settable attributes; drop this ignore once the Protocol declares them as properties.
        engine: RoutingEngine = load_router(settings.artifact, cache=settings.cache, runtime=settings.feature_runtime)
    except ArtifactError as exc:
        raise ConfigError(f"cannot serve router {settings.artifact}: {exc}") from exc
    if settings.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.blas_threads, user_api="blas")  # process-wide, for the rest of its life
    if "default" not in engine.presets:
        raise ConfigError(f"router {settings.artifact} has no 'default' preset (presets: {sorted(engine.presets)})")
    return engine

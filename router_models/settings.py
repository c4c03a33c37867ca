"""The ML package's settings: what the ``sae-router`` ML commands read from the environment, in one place.

``SAE_ROUTER_CACHE``: where packaged backbones are fetched and feature / embedding caches live (default
``~/.cache/sae-router``). Read once by the CLI (:func:`router_models.cli.run`) and by ``python -m
router_models.assets``, then passed down explicitly; no other module of ``router_models`` reads the environment.
The gateway's own :class:`service.core.config.Settings` reads the same variable into ``Settings.cache``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_CACHE", "LibrarySettings"]

DEFAULT_CACHE = Path.home() / ".cache" / "sae-router"


class LibrarySettings(BaseSettings):
    """Environment prefix ``SAE_ROUTER_``; other ``SAE_ROUTER_*`` variables (the gateway's) are ignored."""

    model_config = SettingsConfigDict(env_prefix="SAE_ROUTER_", extra="ignore", frozen=True)

    cache: Path = DEFAULT_CACHE

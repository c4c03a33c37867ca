"""The scorer registry: one table of scorer kinds that training, evaluation and the artifact format read.

Each kind declares (:class:`ScorerKind`):

- ``name``: the ``type`` written in a router's manifest;
- ``cls``: the scorer class (``fit`` / ``predict_quality``: :class:`~router_models.scorers.base.Scorer`);
- ``features``: the feature kinds it reads ("sae", "dense", "task", or "all" for a mapping of them);
- ``to_state`` / ``from_state``: fitted scorer ↔ (JSON-able params, named arrays), so a router is safetensors
  plus JSON, never pickle (absent for a reference that is never saved, such as the task oracle);
- ``shapes(params, m, d, arrays)``: the shape of every array ``to_state`` writes, for ``m`` models and ``d``
  features (``None`` = any), checked by :mod:`router_models.artifact.validate` when a router loads;
- ``parts(params)``: the sub-scorers of a composite (a blend), each checked in turn;
- ``presets``: its named configurations and where they are used: ``candidate`` (tried by
  :func:`router_models.train.selection.default_candidates`), ``harness`` (``sae-router eval --routers``) and
  ``baseline`` (reported next to a trained router by ``sae-router train``).

A new scorer is one module under ``router_models/scorers/`` that defines ``KIND = ScorerKind(...)``, and one
line in ``router_models/scorers/__init__.py`` that registers it. :func:`register` refuses a duplicate name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router_models.scorers.base import Arrays

__all__ = [
    "ROLES",
    "Preset",
    "ScorerKind",
    "Shapes",
    "get_kind",
    "kinds",
    "presets",
    "register",
    "scorer_from_state",
    "scorer_state",
    "unregister",
    "width",
]

ROLES = ("candidate", "harness", "baseline")
Shapes = dict[str, tuple[tuple[int | None, ...], str]]  # array name → (shape, None = any; what it should be)


@dataclass(frozen=True)
class Preset:
    """A named configuration of a scorer kind: the features it reads and the class's keyword options."""

    name: str
    features: str
    options: Mapping[str, Any] = field(default_factory=dict)
    roles: tuple[str, ...] = ROLES
    description: str = ""
    label: str | None = None  # its name in the baselines of a training report (default: ``name``)


@dataclass(frozen=True)
class ScorerKind:
    """A kind of scorer (see the module docstring)."""

    name: str
    cls: Callable[..., Any]
    features: tuple[str, ...]
    to_state: Callable[[Any], tuple[dict[str, Any], Arrays]] | None = None
    from_state: Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], Any] | None = None
    shapes: Callable[[Mapping[str, Any], int, int | None, Mapping[str, np.ndarray]], Shapes] | None = None
    parts: Callable[[Mapping[str, Any]], list[tuple[str, str, str, Mapping[str, Any]]]] | None = None
    presets: tuple[Preset, ...] = ()

    def make(self, preset: Preset) -> Any:
        """A fresh, unfitted scorer of this kind configured by ``preset``."""
        return self.cls(**preset.options)


_KINDS: dict[str, ScorerKind] = {}


def register(kind: ScorerKind) -> ScorerKind:
    """Add a kind to the table; raises on a duplicate kind name or preset name, or an unknown feature kind."""
    if kind.name in _KINDS:
        raise ValueError(f"scorer kind {kind.name!r} is already registered")
    taken = {p.name for k in _KINDS.values() for p in k.presets}
    for p in kind.presets:
        if p.name in taken:
            raise ValueError(f"scorer preset {p.name!r} ({kind.name}) is already registered")
        if p.features not in kind.features:
            raise ValueError(f"preset {p.name!r} reads {p.features!r}, but {kind.name} reads {kind.features}")
        if unknown := set(p.roles) - set(ROLES):
            raise ValueError(f"preset {p.name!r} has unknown role(s) {sorted(unknown)}; roles: {ROLES}")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (for tests that register a toy scorer)."""
    del _KINDS[name]


def kinds() -> dict[str, ScorerKind]:
    """Every registered kind, in registration order."""
    return dict(_KINDS)


def get_kind(name: str) -> ScorerKind:
    """The kind called ``name``; ``KeyError`` naming the known kinds otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown scorer type {name!r}; registered: {sorted(_KINDS)}") from None


def presets(role: str) -> Iterator[tuple[Preset, ScorerKind]]:
    """Every preset with ``role`` ("candidate", "harness" or "baseline"), in registration order."""
    for kind in _KINDS.values():
        for p in kind.presets:
            if role in p.roles:
                yield p, kind


def width(d: int | None) -> str:
    """ "{d} features" for error messages ("features" when the width is not known)."""
    return f"{d} features" if d is not None else "features"


def scorer_state(scorer: Any) -> tuple[str, dict[str, Any], Arrays]:
    """(type, JSON-able params, arrays) of a fitted, saveable scorer; inverse of :func:`scorer_from_state`."""
    for kind in _KINDS.values():
        if type(scorer) is kind.cls and kind.to_state is not None:
            params, arrays = kind.to_state(scorer)
            return kind.name, params, arrays
    raise TypeError(f"cannot export scorer of type {type(scorer).__name__}")


def scorer_from_state(kind: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """Rebuild a fitted scorer from :func:`scorer_state`'s output."""
    k = _KINDS.get(kind)
    if k is None or k.from_state is None:
        saveable = sorted(n for n, x in _KINDS.items() if x.from_state is not None)
        raise ValueError(f"unknown scorer type {kind!r}; expected one of {saveable}")
    return k.from_state(params, arrays)

"""Which router models can be served, by which backend, under which names.

In:  the configured backends and aliases, and the loaded router's model names. Out: a :class:`Catalog`.

A backend's ``name`` is either one of the router's model names or a key of ``aliases`` mapping it to one.
Clients may call a backend by its name, by an alias, or by the router's name for its model. Router models
without a backend are *excluded*: never chosen (they are left out of ``Constraints.allowed``) and listed
by ``/readyz``. Anything that does not fit is a :class:`ConfigError` at start-up, naming the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.core.config import BackendSettings
from service.core.errors import ConfigError

__all__ = ["Catalog", "build_catalog"]


@dataclass(frozen=True)
class Catalog:
    backends: dict[str, BackendSettings]  # backend name -> settings, in config order
    router_name: dict[str, str]  # backend name -> the router's model name
    backend_of: dict[str, str]  # the router's model name -> backend name
    excluded: tuple[str, ...]  # router models with no backend
    names: dict[str, str]  # every name a client may use -> backend name
    models: tuple[str, ...]  # the router's models, in its order

    @property
    def allowed(self) -> tuple[str, ...]:
        """Router model names that have a backend (Constraints.allowed), in the router's order."""
        return tuple(m for m in self.models if m in self.backend_of)

    def backend(self, name: str) -> str | None:
        return self.names.get(name)


def build_catalog(backends: Sequence[BackendSettings], aliases: dict[str, str], models: Sequence[str]) -> Catalog:
    known = set(models)
    errors = [f"alias {a!r} -> {t!r}: the router has no model {t!r}" for a, t in aliases.items() if t not in known]
    router_name: dict[str, str] = {}
    backend_of: dict[str, str] = {}
    for b in backends:
        target = aliases.get(b.name, b.name)
        if target not in known:
            errors.append(
                f"backend {b.name!r} is not a model of the router and has no alias (add aliases: {{{b.name}: <model>}})"
            )
        elif target in backend_of:
            errors.append(f"backends {backend_of[target]!r} and {b.name!r} both serve router model {target!r}")
        else:
            router_name[b.name], backend_of[target] = target, b.name
    if not errors and not backend_of:
        errors.append("no backend is configured for any of the router's models")
    if errors:
        raise ConfigError("config does not fit the router: " + "; ".join(errors) + f". Router models: {list(models)}")
    names = {m: b for m, b in backend_of.items()}
    names.update({a: backend_of[t] for a, t in aliases.items() if t in backend_of})
    names.update({b: b for b in router_name})
    return Catalog(
        backends={b.name: b for b in backends},
        router_name=router_name,
        backend_of=backend_of,
        excluded=tuple(m for m in models if m not in backend_of),
        names=names,
        models=tuple(models),
    )

"""What the ``/ui`` router page shows about the served router: models, prices, presets, training data, curve.

In:  the ready gateway (its scorer and catalog). Out: one JSON-able dict.

Everything comes from the loaded artifact (``manifest.json``: models and prices, the preset table with each
preset's target and validation figures, the training report with the test split's quality–cost curves and
reference points, i.e. report.json's layout). Served through a remote feature worker, the gateway knows only
the router's version, models, presets and prices; the rest is then ``null``. Backends are listed by name and
upstream model id only: no URLs, no key variable names.
"""

from __future__ import annotations

from typing import Any

from service.models import jsonable

__all__ = ["router_summary"]

_PRESET_FIELDS = ("target", "met", "val_quality", "val_cost", "val_share")
_CURVE_FIELDS = ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost", "curve")


def _models(ready: Any) -> list[dict[str, Any]]:
    catalog, prices = ready.catalog, ready.scorer.prices
    rows = []
    for m in ready.scorer.models:
        backend = catalog.backend_of.get(m)
        b = catalog.backends.get(backend) if backend else None
        rows.append(
            {
                "name": m,
                "backend": backend,
                "upstream_model": b.model_id if b else None,
                "training_price": prices.get(m),
                "backend_price": None
                if b is None
                else {"input_per_mtok": b.price_in_per_mtok, "output_per_mtok": b.price_out_per_mtok},
            }
        )
    return rows


def _presets(presets: dict[str, float], table: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for name, lam in sorted(presets.items(), key=lambda kv: kv[1]):
        row = (table or {}).get(name, {})
        extra = {k: row.get(k) for k in _PRESET_FIELDS}
        out.append({"name": name, "lambda": lam, "alias_of": row.get("preset"), **extra})
    return out


def _training(report: dict[str, Any]) -> dict[str, Any] | None:
    if not report:
        return None
    data, test = report.get("data") or {}, report.get("test") or {}
    candidates = {
        name: {k: c.get(k) for k in ("cv_auc", "cv_peak_quality", "cv_cost_at_95", "features", "weights") if k in c}
        for name, c in (report.get("candidates") or {}).items()
    }
    return {
        "dataset": data.get("dataset") or test.get("dataset"),
        "n_train": data.get("n_train", test.get("n_train")),
        "n_test": test.get("n_test"),
        "folds": data.get("folds"),
        "fingerprint": data.get("fingerprint"),
        "selected": report.get("selected"),
        "selection": report.get("selection"),
        "calibration": (report.get("calibration") or {}).get("method"),
        "candidates": candidates,
    }


def _curve(report: dict[str, Any]) -> dict[str, Any] | None:
    test = report.get("test") or {}
    if not test.get("routers") or not test.get("reference"):
        return None
    routers = {name: {k: r.get(k) for k in _CURVE_FIELDS} for name, r in test["routers"].items()}
    ours = next((name for name in routers if name.startswith("sae-router")), None)
    return {
        "dataset": test.get("dataset"),
        "n_test": test.get("n_test"),
        "router": ours,
        "routers": routers,
        "reference": test["reference"],
        "vs_best_baseline": test.get("vs_best_baseline"),
    }


def router_summary(ready: Any) -> dict[str, Any]:
    """The router page's data (see the module docstring). ``ready``: the gateway's ready state."""
    scorer = ready.scorer
    engine = getattr(scorer, "engine", None)  # in-process: the TrainedRouter itself; remote: absent
    report = getattr(engine, "report", None) or {}
    table = getattr(engine, "preset_table", None)
    return jsonable(
        {
            "object": "router",
            "version": scorer.version,
            "worker": "in-process" if engine is not None else "remote",
            "models": _models(ready),
            "excluded_models": list(ready.catalog.excluded),
            "presets": _presets(dict(scorer.presets), table if isinstance(table, dict) else None),
            "training": _training(report),
            "curve": _curve(report),
        }
    )

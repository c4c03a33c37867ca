"""Evaluation reports: ``report.json``, ``report.md`` (a table) and ``curve.png`` (quality vs cost).

In:  the report dictionary built by :mod:`router_models.evaluate.harness` (dataset, n_test, reference points, routers
     with their metrics and curves).
Out: three files in the output directory; :func:`write_report` returns their paths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_table", "plot_curves", "write_report"]

METRIC_COLUMNS = ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost")
PGR_COLUMNS = ("apgr", "cpt50", "cpt80")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def _json_safe(obj: Any) -> Any:
    """inf/NaN become strings so report.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else "-inf" if obj < 0 else "nan"
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def markdown_table(report: dict[str, Any]) -> str:
    """One row per router, then the reference points."""
    two_models = any("apgr" in r for r in report["routers"].values())
    cols = METRIC_COLUMNS + (PGR_COLUMNS if two_models else ())
    head = "| router | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    rows = []
    for name, r in report["routers"].items():
        rows.append(f"| {name} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    refs = report["reference"]
    best_q = refs["best_single"]["quality"]
    for name in ("cheapest", "best_single", "oracle"):
        ref = refs[name]
        label = f"*{name}*" + (f" ({ref['model']})" if ref.get("model") else "")
        rows.append(f"| {label} | cost {_fmt(ref['cost'])} | | quality {_fmt(ref['quality'])} | |")
    rnd = refs.get("random")
    if rnd:
        rows.append(f"| *random mixing* | {_fmt(rnd['auc'])} | | {_fmt(best_q)} | |")
    return head + "\n".join(rows) + "\n"


def plot_curves(report: dict[str, Any], path: Path) -> None:
    """Every router's realized (cost, quality) points and envelope, plus the reference points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from router_models.evaluate.metrics import upper_envelope

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, r in report["routers"].items():
        pts = np.array(r["curve"], dtype=float)
        xs, ys = upper_envelope(pts[:, 0], pts[:, 1])
        (line,) = ax.plot(xs, ys, "-", lw=1.8, label=f"{name} (auc {_fmt(r['auc'])})")
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=line.get_color(), alpha=0.35)
    refs = report["reference"]
    rnd = np.array(refs["random"]["curve"])
    ax.plot(rnd[:, 0], rnd[:, 1], "k--", lw=1, label="random mixing")
    markers = {"cheapest": ("v", "tab:gray"), "best_single": ("s", "black"), "oracle": ("*", "gold")}
    for name, (marker, color) in markers.items():
        ref = refs[name]
        label = name + (f": {ref['model']}" if ref.get("model") else "")
        ax.scatter(
            [ref["cost"]], [ref["quality"]], marker=marker, s=110, color=color, edgecolor="k", zorder=5, label=label
        )
    costs = [refs[k]["cost"] for k in markers]
    if max(costs) > 8 * max(min(costs), 1e-12):
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per prompt (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{report['dataset']}: quality vs cost on the test split (n={report['n_test']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and curve.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "curve.png"}
    paths["json"].write_text(json.dumps(_json_safe(report), indent=1))
    title = f"# {report['dataset']}: routing quality on the test split ({report['n_test']} prompts)\n\n"
    notes = "".join(f"- {n}\n" for n in report.get("notes", []))
    paths["md"].write_text(title + markdown_table(report) + ("\n" + notes if notes else ""))
    plot_curves(report, paths["png"])
    return paths

"""The default router's report (from its manifest) into benchmarks/RESULTS.md, section "default-router".

    python -m benchmarks.default_router_report [--artifact artifacts/default-router] [--no-write]

Reads what ``sae-router train`` recorded in the artifact: the selection table (cross-validated AUC of every
candidate, ensemble weights), calibration choice, presets, and the test split's metrics of the served router
next to the baselines fitted in the same run, with the paired bootstrap interval against the best baseline.
Nothing is refitted or re-scored here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.eval_all import ROOT, _f, update_results


def section(manifest: dict[str, Any]) -> str:
    """Markdown of the default router's report."""
    rep, test = manifest["report"], manifest["report"]["test"]
    data, calib = rep["data"], rep["calibration"]
    cands = rep["candidates"]
    folds = data.get("folds", "?")
    cv = (
        "task-grouped cross-validation on them: one fold per task family"
        if folds == "task"
        else f"{folds}-fold cross-validation on them"
    )
    lines = [
        f"Pool: {len(manifest['models'])} models; {data['n_train']} train prompts "
        f"({cv}), {test['n_test']} test prompts. "
        f"Selected: **{rep['selected']}**; calibration: **{calib['method']}** (cross-fitted AUC "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(calib.get("cross_fitted_auc", {}).items()))
        + ").",
        "",
        "Cross-validated AUC on train of every candidate: "
        + ", ".join(f"{k} ({v['features']}) {v['cv_auc']:.3f}" for k, v in sorted(cands.items()))
        + ".",
    ]
    if "ensemble" in cands:
        weights = cands["ensemble"]["weights"]
        lines += ["", "Ensemble weights: " + ", ".join(f"{k} {w:.2f}" for k, w in weights.items()) + "."]
    lines += ["", "Test split:", "", "| router | auc | cost_at_95 | peak_quality | quality@best-cost |"]
    lines.append("|---|---|---|---|---|")
    for name, r in sorted(test["routers"].items()):
        row = [_f(r[k]) for k in ("auc", "cost_at_95", "peak_quality", "quality_at_best_cost")]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    for key in ("cheapest", "best_single", "oracle"):
        ref = test["reference"][key]
        model = f" ({ref['model']})" if ref.get("model") else ""
        lines.append(f"| *{key}*{model} | | cost ${ref['cost']:.3g} | {_f(ref['quality'])} | |")
    random = test["reference"].get("random")
    if random:
        lines.append(f"| *random mixing* | {_f(random.get('auc'))} | | | |")
    vs = test.get("vs_best_baseline")
    if vs:
        lines += [
            "",
            f"Served router minus the best deployable baseline ({vs['baseline']}) on test: Δ auc {vs['delta']:+.3f}, "
            f"95% paired bootstrap interval [{vs['lo']:+.3f}, {vs['hi']:+.3f}] ({vs['n_boot']} resamples; "
            f"share of resamples with Δ ≥ 0: {vs['share_a_ge_b']:.2f}).",
        ]
    presets = manifest["presets"]
    shown = [
        f"`{k}` λ={p['lambda']:.4g} (quality {p['val_quality']:.3f}, cost ${p['val_cost']:.2g})"
        for k, p in presets.items()
        if k != "default"
    ]
    default = presets["default"].get("preset", "?")
    preset_text = "; ".join(shown) + f"; `default` = `{default}`."
    lines += ["", "Presets (λ set on out-of-fold predictions of train): " + preset_text]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, default=ROOT / "artifacts" / "default-router")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    text = section(json.loads((args.artifact / "manifest.json").read_text()))
    print(text)
    if not args.no_write:
        update_results(text, "default-router")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

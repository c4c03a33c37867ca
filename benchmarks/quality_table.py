"""The trained router (SAE features, scorer selected by cross-validation on train) vs baselines, per dataset.

    python -m benchmarks.quality_table --sae artifacts/sae/smollm2-l15 --max-train 1000 --max-test 400

For each dataset, ``sae-router train``'s pipeline runs on a stable-hash subsample: candidates are cross-fitted
on train (5 folds), the winner (a candidate or a greedy ensemble of them) is picked by cross-validated AUC,
calibrated, and scored on test next to kNN, dense probe,
UniRoute clusters, SAE probe, SAE kNN and the task oracle, all fitted in the same run on the same
features (and using the same cost predictions). The router's row gives its test AUC minus the best
deployable baseline's with a paired bootstrap 95% interval over test prompts (200 resamples); "within
noise" marks a loss whose interval includes 0. The table goes between the ``quality-table`` markers of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.eval_all import DEFAULT_DATA, ROOT, _f, update_results
from router_models.evaluate.report import write_report
from router_models.train.router import TrainConfig, train_router


def rows(rep: dict[str, Any]) -> list[str]:
    """Table rows of one dataset; the trained router's row says whether it meets the two goals."""
    out = []
    refs = rep["reference"]
    best, oracle = refs["best_single"], refs["oracle"]
    oracle_allows = oracle["quality"] >= 0.95 * best["quality"] and oracle["cost"] <= 0.5 * best["cost"]
    baselines = [v["auc"] for k, v in rep["routers"].items() if not k.startswith("sae-router") and "oracle" not in k]
    for name, r in rep["routers"].items():
        goal = ""
        if name.startswith("sae-router"):
            auc_ok = "✅" if r["auc"] >= max(baselines) - 1e-9 else "❌"
            vs = rep.get("vs_best_baseline")
            if vs:
                noise = " (within noise)" if auc_ok == "❌" and vs["hi"] >= 0 else ""
                auc_ok += f"{noise} Δ {vs['delta']:+.3f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}] vs {vs['baseline']}"
            c95 = ("✅" if r["cost_at_95"] <= 0.5 else "❌") if oracle_allows else "n/a (oracle can't)"
            goal = f"AUC ≥ best baseline {auc_ok}; 95% at ≤ 50% cost {c95}"
        out.append(
            f"| {rep['dataset']} | {name} | {_f(r['auc'])} | {_f(r['cost_at_95'])} | {_f(r['peak_quality'])} | {goal} |"
        )
    for key in ("best_single", "oracle"):
        ref = refs[key]
        label = f"*{key}*" + (f" ({ref['model']})" if ref.get("model") else "")
        out.append(f"| {rep['dataset']} | {label} | | cost ${ref['cost']:.3g} | {_f(ref['quality'])} | |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--sae", default="artifacts/sae/smollm2-l15")
    p.add_argument("--max-train", type=int, default=1000)
    p.add_argument("--max-test", type=int, default=400)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    lines = ["| dataset | router | auc | cost_at_95 | peak_quality | goals |", "|---|---|---|---|---|---|"]
    for f in sorted(args.data_dir.glob("*.parquet")):
        started = time.perf_counter()
        cfg = TrainConfig(
            data=[str(f)],
            sae=args.sae,
            out=str(args.out / f.stem),
            prices=str(args.data_dir / "prices.json"),
            max_train=args.max_train,
            max_test=args.max_test,
            overwrite=True,
            progress=False,
        )
        _, rep = train_router(cfg)
        write_report(rep, args.out / f.stem / "report")
        lines += rows(rep)
        print(f"[quality] {f.stem}: {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        update_results(table, "quality-table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Routing-quality table for every dataset in a folder, written into benchmarks/RESULTS.md.

    python -m benchmarks.eval_all                       # ../shared/data/routing, default routers
    python -m benchmarks.eval_all --routers knn,dense,task_oracle --out runs/eval_all

For each ``*.parquet`` it runs the evaluation harness (fit on train, score on test), keeps each dataset's
report under ``--out/<dataset>/`` and replaces the block between the ``eval-table`` markers in
RESULTS.md with one table: a row per (dataset, router) plus the reference points.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from router_models.data import load_dataset
from router_models.evaluate.harness import EvalConfig, evaluate_dataset
from router_models.evaluate.report import write_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routing"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _f(x: Any, digits: int = 3) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def table(reports: list[dict[str, Any]]) -> str:
    """One markdown table over datasets: routers, then cheapest / best single / oracle."""
    lines = [
        "| dataset | router | auc | cost_at_95 | peak_quality | quality@best-cost | apgr |",
        "|---|---|---|---|---|---|---|",
    ]
    for rep in reports:
        ds, refs = rep["dataset"], rep["reference"]
        best = max(rep["routers"], key=lambda n: rep["routers"][n]["auc"] if n != "task_oracle" else -1)
        for name, r in rep["routers"].items():
            label = f"**{name}**" if name == best else name
            lines.append(
                f"| {ds} | {label} | {_f(r['auc'])} | {_f(r['cost_at_95'])} | {_f(r['peak_quality'])} | "
                f"{_f(r['quality_at_best_cost'])} | {_f(r.get('apgr'))} |"
            )
        for key in ("cheapest", "best_single", "oracle"):
            ref = refs[key]
            model = f" ({ref['model']})" if ref.get("model") else ""
            lines.append(f"| {ds} | *{key}*{model} | | cost ${ref['cost']:.3g} | {_f(ref['quality'])} | | |")
        lines.append(f"| {ds} | *random mixing* | {_f(refs['random']['auc'])} | | | | |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, stem: str, results: Any, table: str) -> None:
    """``out/stem.json`` (the results) and ``out/stem.md`` (the markdown table), then the table on stdout."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)


def update_results(block: str, marker: str = "eval-table", path: Path = RESULTS) -> None:
    """Replace the text between <!-- marker:start --> and <!-- marker:end --> (appended if absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    new = f"{start}\n{block}{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: new, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--routers", default="knn,dense,task_oracle")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "eval_all")
    p.add_argument("--backbone", default=EvalConfig().backbone)
    p.add_argument("--marker", default="eval-table", help="RESULTS.md block to replace")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    files = sorted(args.data_dir.glob("*.parquet"))
    if not files:
        print(f"no *.parquet under {args.data_dir}", file=sys.stderr)
        return 2
    cfg = EvalConfig(backbone=args.backbone)
    routers = [r for r in args.routers.split(",") if r]
    reports = []
    for f in files:
        started = time.perf_counter()
        rep = evaluate_dataset(load_dataset(f), routers, cfg)
        write_report(rep, args.out / rep["dataset"])
        print(f"[eval_all] {rep['dataset']}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
        reports.append(rep)
    block = table(reports)
    print(block)
    if not args.no_write:
        update_results(block, args.marker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

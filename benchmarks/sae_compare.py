"""Dense vs SAE features, per backbone and SAE kind, on every shared dataset; plus the SAEs' own metrics.

    python -m benchmarks.sae_compare --saes artifacts/sae/smollm2-l15,artifacts/sae/smollm2-route,\
artifacts/sae/minilm-l3,artifacts/sae/minilm-route --max-train 400 --max-test 200

For every (dataset, SAE) pair the harness fits ``dense`` and ``knn`` on the mean-pooled hidden state of the
SAE's backbone at the SAE's (reference) layer, and ``sae_probe`` / ``sae_knn`` on the SAE's pooled latents,
all from one forward pass over the same subsample (prompts picked by a stable hash, so every router sees the
same train/val/test prompts). Tables go between the ``sae-table`` and ``sae-metrics`` markers of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.eval_all import DEFAULT_DATA, ROOT, _f, update_results
from router_models.data import load_dataset
from router_models.evaluate.harness import EvalConfig, evaluate_dataset
from router_models.evaluate.report import write_report

ROUTERS = ["dense", "knn", "sae_probe", "sae_knn"]


def sae_metrics_table(saes: list[Path]) -> str:
    lines = [
        "| SAE | backbone | layer(s) | d_sae | k | NMSE | expl. var. | L0 | dead | KL | KL (zero-abl.) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sae in saes:
        meta = json.loads((sae / "sae_router.json").read_text())
        m, job = meta["metrics"], meta["job"]
        layers = meta["layers"]
        lay = str(layers[0]) if len(layers) == 1 else f"{layers[0]}–{layers[-1]} ({len(layers)})"
        ev = m.get("explained_variance", 1 - m["nmse"])
        lines.append(
            f"| {sae.name} | {meta['backbone']['name']} | {lay} | {job['d_sae']} | {job['k']} | {_f(m['nmse'])} | "
            f"{_f(ev)} | {_f(m['l0'], 1)} | {_f(m['dead_fraction'])} | {_f(m.get('kl'))} | "
            f"{_f(m.get('kl_zero_ablation'))} | {_f(m.get('train_seconds'), 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--saes", required=True, help="comma-separated SAE folders")
    p.add_argument("--max-train", type=int, default=400)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "sae_compare")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    saes = [Path(s) for s in args.saes.split(",") if s]
    files = sorted(args.data_dir.glob("*.parquet"))
    lines = [
        "| dataset | backbone · SAE | router | auc | cost_at_95 | peak_quality | best single / oracle quality |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in files:
        ds = load_dataset(f)
        for sae in saes:
            started = time.perf_counter()
            cfg = EvalConfig(
                sae=str(sae),
                max_train=args.max_train,
                max_test=args.max_test,
                max_tokens=args.max_tokens,
                progress=False,
            )
            rep: dict[str, Any] = evaluate_dataset(ds, ROUTERS, cfg)
            write_report(rep, args.out / f"{rep['dataset']}__{sae.name}")
            refs = rep["reference"]
            best = max(rep["routers"], key=lambda n: rep["routers"][n]["auc"])
            for name, r in rep["routers"].items():
                label = f"**{name}**" if name == best else name
                lines.append(
                    f"| {rep['dataset']} (n_test={rep['n_test']}) | {sae.name} | {label} | {_f(r['auc'])} | "
                    f"{_f(r['cost_at_95'])} | {_f(r['peak_quality'])} | "
                    f"{_f(refs['best_single']['quality'])} / {_f(refs['oracle']['quality'])} |"
                )
            print(
                f"[sae_compare] {rep['dataset']} × {sae.name}: {time.perf_counter() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    table = "\n".join(lines) + "\n"
    metrics = sae_metrics_table(saes)
    print(metrics)
    print(table)
    if not args.no_write:
        update_results(metrics, "sae-metrics")
        update_results(table, "sae-table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency × quality of the backbone runtimes (issue 13): the bundled router's features computed by eager torch and
by ONNX Runtime, on the same test prompts in one run.

    python -m benchmarks.runtime_table                     # the three zeroeval files' test splits (~1,000 prompts)
    python -m benchmarks.runtime_table --max-test 200      # quicker

Per runtime, each test prompt is routed alone (``score_batch([prompt])``: tokenizer, backbone, SAE, scorers,
calibration, cost model: what a cache miss costs the gateway's engine thread), runtimes alternating prompt by
prompt so machine load hits both alike. Reported: p50 / p95 ms per prompt, CPU ms per prompt, the test AUC of each
runtime's predictions per file with the paired-bootstrap difference (ONNX − torch), how many (prompt, preset)
decisions differ, and the largest |Δ predicted quality|. Prints a markdown table; ``--out`` also writes JSON.

Needs ``../shared/data/routing`` (or ``--data``). The gateway sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads
(service/core/server.py) and holds numpy's BLAS to ``blas_threads`` (1; service/engine.py); this script does the
same, so the figures are the gateway's engine-thread figures (§12c's were measured before the BLAS limit).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the gateway does

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routing"
FILES = ("zeroeval_gsm_math.parquet", "zeroeval_mmlu_redux.parquet", "zeroeval_zebra.parquet")
RUNTIMES = ("torch", "onnx")
SHORT = 64  # content tokens of a "short prompt" (the issue's ≤ 64-token goal)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--artifact", type=Path, default=ROOT / "artifacts" / "default-router")
    p.add_argument("--data", type=Path, nargs="+", default=[DATA / f for f in FILES])
    p.add_argument("--max-test", type=int, default=None, help="test prompts per file (stable hash); default all")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from router_models.artifact.load import load_router
    from router_models.data import load_dataset, subsample
    from router_models.decide.policy import argmax_utility
    from router_models.evaluate.metrics import evaluate_router, paired_bootstrap, reference_points

    threadpool_limits(1, user_api="blas")  # the gateway's blas_threads default
    routers = {rt: load_router(args.artifact, runtime=rt) for rt in RUNTIMES}
    for rt, router in routers.items():
        router.score_batch(["warm-up"])  # loads the backbone; exports the ONNX graph once if not cached
        assert router.runtime == rt, f"asked for {rt}, got {router.runtime}"
    models = routers["torch"].models
    rows: list[dict[str, Any]] = []
    lat: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    cpu: dict[str, float] = dict.fromkeys(RUNTIMES, 0.0)
    n_tokens: list[int] = []
    backbone = routers["torch"].featurize.backbone  # type: ignore[union-attr]
    for file in args.data:
        test = subsample(load_dataset(file), 0, args.max_test).split("test")
        shared = [m for m in models if m in test.models]
        test = test.select_models(shared)
        test = test.subset(~np.isnan(test.scores).all(axis=1))
        texts = [str(t) for t in test.prompts]
        n_tokens += [len(ids) for ids in backbone.content_ids(texts)]  # in the order lat[rt] is appended
        q = {rt: np.zeros((len(texts), len(models))) for rt in RUNTIMES}
        c = {rt: np.zeros((len(texts), len(models))) for rt in RUNTIMES}
        for i, text in enumerate(texts):
            for rt in RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]:
                c0, t0 = time.process_time(), time.perf_counter()
                s = routers[rt].score_batch([text])[0]
                lat[rt].append(time.perf_counter() - t0)
                cpu[rt] += time.process_time() - c0
                q[rt][i], c[rt][i] = s.quality, s.cost
        idx = [models.index(m) for m in shared]
        refs = reference_points(test.scores, test.costs, tuple(shared))
        auc = {
            rt: evaluate_router(q[rt][:, idx], c[rt][:, idx], test.scores, test.costs, tuple(shared), refs)["auc"]
            for rt in RUNTIMES
        }
        pred = {rt: (q[rt][:, idx], c[rt][:, idx]) for rt in RUNTIMES}
        boot = paired_bootstrap(
            pred["onnx"][0],
            pred["torch"][0],
            pred["onnx"][1],
            test.scores,
            test.costs,
            tuple(shared),
            n_boot=args.n_boot,
            pred_c_b=pred["torch"][1],
        )
        flips = sum(
            int((argmax_utility(q["torch"], c["torch"], lam) != argmax_utility(q["onnx"], c["onnx"], lam)).sum())
            for lam in routers["torch"].presets.values()
        )
        rows.append(
            {
                "file": file.name,
                "n_test": len(texts),
                "auc_torch": auc["torch"],
                "auc_onnx": auc["onnx"],
                "delta": boot,
                "decisions": len(texts) * len(routers["torch"].presets),
                "flipped": flips,
                "max_abs_dq": float(np.abs(q["onnx"] - q["torch"]).max()),
            }
        )
        print(f"{file.name}: {len(texts)} prompts done", flush=True)
    n = len(lat["torch"])
    short = np.asarray(n_tokens) <= SHORT
    speed = {
        rt: {
            "p50_ms": float(np.percentile(lat[rt], 50) * 1000),
            "p95_ms": float(np.percentile(lat[rt], 95) * 1000),
            "cpu_ms": cpu[rt] / n * 1000,
            "short_n": int(short.sum()),
            "short_p50_ms": float(np.percentile(np.asarray(lat[rt])[short], 50) * 1000) if short.any() else None,
        }
        for rt in RUNTIMES
    }
    out = {
        "artifact": str(args.artifact),
        "torch_threads": torch.get_num_threads(),
        "prompts": n,
        "content_tokens_p50": float(np.percentile(n_tokens, 50)),
        "content_tokens_p95": float(np.percentile(n_tokens, 95)),
        "speed": speed,
        "quality": rows,
        "load_avg": os.getloadavg(),
    }
    print(_markdown(out))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


def _markdown(out: dict[str, Any]) -> str:
    s = out["speed"]
    lines = [
        f"{out['prompts']} test prompts routed one at a time (content tokens p50 {out['content_tokens_p50']:.0f}, "
        f"p95 {out['content_tokens_p95']:.0f}), {out['torch_threads']} torch threads, load avg "
        f"{out['load_avg'][0]:.1f}",
        "",
        f"| runtime | p50 ms / prompt | p95 ms | CPU ms / prompt | × torch (p50) | p50 ms, ≤ {SHORT} tokens (n) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for rt in RUNTIMES:
        short = s[rt]["short_p50_ms"]
        lines.append(
            f"| {rt} | {s[rt]['p50_ms']:.1f} | {s[rt]['p95_ms']:.1f} | {s[rt]['cpu_ms']:.1f} "
            f"| {s['torch']['p50_ms'] / s[rt]['p50_ms']:.2f} "
            f"| {'–' if short is None else f'{short:.1f}'} ({s[rt]['short_n']}) |"
        )
    lines += [
        "",
        "| test file | n | AUC torch | AUC onnx | Δ onnx − torch [95% CI] | decisions changed | max abs Δ quality |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in out["quality"]:
        d = r["delta"]
        lines.append(
            f"| {r['file']} | {r['n_test']} | {r['auc_torch']:.4f} | {r['auc_onnx']:.4f} "
            f"| {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] | {r['flipped']} / {r['decisions']} "
            f"| {r['max_abs_dq']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""Batches of mixed-length prompts on a CPU: one padded forward per batch against length buckets
(``BackboneConfig.min_fill``), same prompts, same run (issue 13).

    python -m benchmarks.batch_fill                       # 480 zeroeval test prompts, batches of 1, 4, 16 and 32
    python -m benchmarks.batch_fill --prompts 160 --batches 16

The bundled router (ONNX Runtime backbone, numpy's BLAS on one thread: the gateway's CPU settings) routes the
zeroeval test prompts, shuffled with a fixed seed so that every batch mixes lengths, in batches of B
(``score_batch``: what the feature worker runs when B requests queue up). Each batch is routed under every
``min_fill`` in turn, alternating, so machine load hits them alike. Reported per setting and batch size: ms and
CPU ms per prompt, and the largest |Δ predicted quality| against the first setting (splitting a batch must not
change a prompt's scores beyond float rounding). Needs ``../shared/data/routing`` (or ``--data``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the gateway does

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routing"
FILES = ("zeroeval_gsm_math.parquet", "zeroeval_mmlu_redux.parquet", "zeroeval_zebra.parquet")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--artifact", type=Path, default=ROOT / "artifacts" / "default-router")
    p.add_argument("--data", type=Path, nargs="+", default=[DATA / f for f in FILES])
    p.add_argument("--prompts", type=int, default=480, help="test prompts routed per batch size and setting")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--fills", type=float, nargs="+", default=[0.0, 0.9], help="min_fill settings compared")
    args = p.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from router_models.artifact.load import BackboneFeaturizer, load_router
    from router_models.data import load_dataset

    threadpool_limits(1, user_api="blas")  # the gateway's blas_threads default
    router = load_router(args.artifact, runtime="onnx")
    router.score_batch(["warm-up"])
    featurize = router.featurize
    assert isinstance(featurize, BackboneFeaturizer) and featurize.backbone is not None
    backbone = featurize.backbone
    texts: list[str] = []
    for path in args.data:
        texts += [str(t) for t in load_dataset(path).split("test").prompts]
    texts = list(dict.fromkeys(texts))
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[: args.prompts]]
    configs = {fill: dataclasses.replace(backbone.config, min_fill=fill) for fill in args.fills}

    print(f"| batch | min_fill | ms / prompt | CPU ms / prompt | max abs Δ quality vs min_fill {args.fills[0]} |")
    print("|--:|--:|--:|--:|--:|")
    for size in args.batches:
        wall = dict.fromkeys(args.fills, 0.0)
        cpu = dict.fromkeys(args.fills, 0.0)
        diff = dict.fromkeys(args.fills, 0.0)
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            first = None
            for fill, config in configs.items():
                backbone.config = config
                t0, c0 = time.perf_counter(), time.process_time()
                scores = router.score_batch(batch)
                wall[fill] += time.perf_counter() - t0
                cpu[fill] += time.process_time() - c0
                q = np.stack([s.quality for s in scores])
                first = q if first is None else first
                diff[fill] = max(diff[fill], float(np.abs(q - first).max()))
        for fill in args.fills:
            n = len(texts)
            print(f"| {size} | {fill} | {wall[fill] / n * 1e3:.1f} | {cpu[fill] / n * 1e3:.1f} | {diff[fill]:.1e} |")
    load = os.getloadavg()[0]
    print(f"\n{len(texts)} prompts per cell; machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

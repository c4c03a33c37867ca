"""Feature-extraction throughput: prompts/s and per-prompt latency by batch size, backbone and early stop.

    python -m benchmarks.bench_features                      # both backbones, batches 1/8/32/64
    python -m benchmarks.bench_features --backbones SmolLM2-135M-Instruct --batches 1,8 --prompts 64

For each backbone the hidden state at the SAE layer (SmolLM2: block 15 of 30; MiniLM: block 3 of 6) is
computed twice: stopping after that block (what the router does) and with the full model (``full``).
Prompts are real routing prompts (../shared/data/routing/dcrouter.parquet) when present, else generated
text, cut to --max-tokens. The device is printed with the table: run it on a GPU machine to get GPU rows.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from router_models.features.backbone import Backbone, BackboneConfig

LAYERS = {"SmolLM2-135M-Instruct": 15, "all-MiniLM-L6-v2": 3}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "dcrouter.parquet"


def sample_prompts(n: int) -> list[str]:
    if DATA.exists():
        from router_models.data import load_dataset

        prompts = [str(p) for p in load_dataset(DATA).prompts]
        step = max(1, len(prompts) // n)
        return prompts[::step][:n]
    return [f"Question {i}: what is {i} times {i + 3}? Explain the steps. " * 4 for i in range(n)]


def bench(backbone: Backbone, prompts: list[str], layer: int, batch: int, early: bool) -> tuple[float, float]:
    """(prompts/s, mean ms per batch / batch) over all prompts in batches of ``batch``."""
    run = backbone.hidden_states if early else backbone.full_hidden_states
    run(prompts[:batch], [layer])  # warm-up
    if backbone.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    n_batches = 0
    for i in range(0, len(prompts), batch):
        run(prompts[i : i + batch], [layer])
        n_batches += 1
    if backbone.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return len(prompts) / elapsed, 1000 * elapsed / n_batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default=",".join(LAYERS))
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--prompts", type=int, default=128, help="prompts per measurement")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    prompts = sample_prompts(args.prompts)
    device = "cpu"
    rows = []
    for name in args.backbones.split(","):
        bb = Backbone.load(BackboneConfig(name=name, max_tokens=args.max_tokens, device=args.device))
        device = (
            torch.cuda.get_device_name(0) if bb.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        )
        layer = LAYERS.get(name, bb.n_layers // 2)
        for batch in [int(b) for b in args.batches.split(",")]:
            for early in (True, False):
                n = max(args.prompts // 8, batch) if batch == 1 else args.prompts
                pps, ms = bench(bb, prompts[:n], layer, batch, early)
                rows.append(
                    (name, f"{layer + 1}/{bb.n_layers}" if early else f"full {bb.n_layers}", batch, pps, ms, ms / batch)
                )
    print(
        f"device: {device}; torch {torch.__version__}; {platform.processor() or platform.machine()}; "
        f"max_tokens {args.max_tokens}; dtype {'bf16' if 'CPU' not in device else 'fp32'}"
    )
    print("| backbone | blocks run | batch | prompts/s | ms per batch | ms per prompt |")
    print("|---|---|---|---|---|---|")
    for name, blocks, batch, pps, ms, per in rows:
        print(f"| {name} | {blocks} | {batch} | {pps:.1f} | {ms:.1f} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Deletion test of the explanations: do the SAE latents an explanation cites act on the served decision?

    python -m benchmarks.deletion [--n 200 | --n 0 (whole test split)] [--out runs/deletion/deletion.json]

For ``--n`` test prompts of the router's data (default: the default router and zeroeval_gsm_math, its training
data), the decision at ``--preset`` is taken with its explanation (``TrainedRouter.decide(..., explain=True)``,
the path the CLI and the gateway share), and with it the runner-up. Then k latents (k in ``--ks``) are deleted
from every feature view (:mod:`router_models.features.intervene`: zeroed in the pooled SAE row, their decoder
contribution removed from the dense row) and the prompt re-scored with the served router (every part of the
scorer, calibration, cost model: :meth:`~router_models.router.TrainedRouter.rescore`). Three ways to pick the k:

- ``cited``: the first k latents of the explanation (ranked by measured effect on the served margin);
- ``probe``: the first k *active* latents by |contribution| to the SAE probe's logit difference (what the
  explanation cited before; inactive latents are skipped since deleting them does nothing);
- ``probe+``: the same, counting only latents whose contribution (summed over pooling blocks) favours the choice;
- ``random``: k latents drawn uniformly from the prompt's active latents (``--draws`` draws, averaged per prompt).

All three delete the same number of latents per prompt: min(k, latents the explanation cites). Reported per
method and k: how often the served decision flips (argmax of q − λ·c over all models changes), and the drop of
the utility margin (chosen − runner-up at λ) and of the quality margin, as mean and median over prompts with
95% percentile bootstrap intervals over prompts (``--boot`` resamples). A markdown table goes to stdout and the
per-prompt numbers and the summary to ``--out``. One torch/BLAS thread by default (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routing" / "zeroeval_gsm_math.parquet"
METHODS = ("cited", "probe", "probe+", "random")
FIELDS = ("flip", "lowered", "utility_drop", "quality_drop", "n")


def _features(router: Any, texts: list[str]) -> Any:
    """The prompts' features through the router's own feature function, cached on disk per text (the key
    ``router_models.features.cache.cached_features`` uses for the same SAE and settings)."""
    from router_models.assets import cache_root
    from router_models.features.cache import FeatureCache

    s = router.spec
    key = [s.backbone, s.max_tokens, s.head_tokens, s.chat_template, s.fingerprint, ",".join(s.pooling)]
    return FeatureCache(cache_root(None), key).get_or_compute(texts, router.featurize)


def _probe_latents(router: Any, x: np.ndarray, i: int, r: int | None, positive: bool = False) -> list[int]:
    """Active latents by |probe contribution| of their pooled features, largest first (the old explanation);
    ``positive``: only latents whose contribution summed over the pooling blocks is > 0."""
    from router_models.decide.explain import probe_contributions
    from router_models.features.intervene import active_latents

    d_sae = router.spec.d_sae
    values = probe_contributions(router.probe, x, i, r).values
    order = np.argsort(-np.abs(values), kind="stable")
    active = set(active_latents(x, d_sae).tolist())
    if positive:
        total = values.reshape(-1, d_sae).sum(axis=0)
        active = {a for a in active if total[a] > 0}
    seen: dict[int, None] = {}
    for f in order:
        latent = int(f) % d_sae
        if latent in active and values[f] != 0:
            seen.setdefault(latent, None)
    return list(seen)


def _full_screen(router: Any, scores: Any, lam: float, i: int, r: int | None, active: np.ndarray) -> np.ndarray:
    """Utility-margin drop of deleting each active latent alone [n_active] (one batch)."""
    q, c, _ = router.rescore(scores, [[], *([int(a)] for a in active)])
    util = q - lam * c
    um = util[:, i] - (util[:, r] if r is not None else 0.0)
    return np.asarray(um[0] - um[1:])


def _one_prompt(
    router: Any, scores: Any, lam: float, ks: list[int], draws: int, rng: np.random.Generator, screen_all: bool
) -> dict:
    """Every deletion of one prompt, re-scored in one batch; the margins and flips per (method, k)."""
    from router_models.decide.engine import runner_up
    from router_models.decide.policy import argmax_utility
    from router_models.features.intervene import active_latents

    t0 = time.perf_counter()
    d = router.decide(scores, lam, explain=True)
    explain_ms = (time.perf_counter() - t0) * 1000
    models = router.models
    i, r_name = models.index(d.model), runner_up(d)
    r = models.index(r_name) if r_name is not None else None
    x = np.asarray(scores.features, dtype=np.float32).ravel()
    cited = [int(f["latent"]) for f in d.explanation["features"]]
    probe = _probe_latents(router, x, i, r) if router.probe is not None else []
    probe_plus = _probe_latents(router, x, i, r, positive=True) if router.probe is not None else []
    active = active_latents(x, router.spec.d_sae)
    sets: list[tuple[str, int, list[int]]] = []
    for k in ks:
        n = min(k, len(cited))
        sets += [("cited", k, cited[:n]), ("probe", k, probe[:n]), ("probe+", k, probe_plus[:n])]
        sets += [("random", k, [int(v) for v in rng.choice(active, n, replace=False)]) for _ in range(draws)]
    q, c, _ = router.rescore(scores, [[], *(s for _, _, s in sets)])
    util = q - lam * c
    um = util[:, i] - (util[:, r] if r is not None else 0.0)
    qm = q[:, i] - (q[:, r] if r is not None else 0.0)
    flips = argmax_utility(q, c, lam) != i
    out: dict[str, Any] = {"model": d.model, "runner_up": r_name, "utility_margin": float(um[0])}
    out |= {"quality_margin": float(qm[0]), "n_cited": len(cited), "n_active": int(active.size)}
    out["explain_ms"] = explain_ms
    rows: dict[str, dict[str, list[float]]] = {}
    for row, (method, k, latents) in enumerate(sets, start=1):
        cell = rows.setdefault(f"{method}@{k}", {f: [] for f in FIELDS})
        cell["flip"].append(float(flips[row]))
        cell["lowered"].append(float(um[row] < um[0]))
        cell["utility_drop"].append(float(um[0] - um[row]))
        cell["quality_drop"].append(float(qm[0] - qm[row]))
        cell["n"].append(float(len(latents)))
    out["deletions"] = {key: {m: float(np.mean(v)) for m, v in cell.items()} for key, cell in rows.items()}
    if screen_all:  # does the explanation's candidate screen miss stronger latents?
        drops = _full_screen(router, scores, lam, i, r, active)
        first = float(drops[np.searchsorted(active, cited[0])]) if cited else 0.0
        out["screen_all"] = {
            "best_drop": float(drops.max(initial=0.0)),
            "cited_first_drop": first,
            "cited_first_rank": int((drops > first + 1e-9).sum()) + 1 if cited else None,
            "n_lowering": int((drops > 0).sum()),
        }
    return out


def _interval(values: np.ndarray, stat: Any, n_boot: int, rng: np.random.Generator) -> list[float]:
    """[statistic, lo, hi]: 95% percentile bootstrap over prompts."""
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    draws = stat(values[idx], axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(stat(values)), float(lo), float(hi)]


def summarize(prompts: list[dict], ks: list[int], n_boot: int, seed: int) -> dict[str, Any]:
    """Per (method, k): flip rate, mean/median utility-margin drop, mean quality-margin drop, with intervals;
    and cited − random and probe − random of the mean utility drop (paired over prompts)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for k in ks:
        cols = {m: {f: np.array([p["deletions"][f"{m}@{k}"][f] for p in prompts]) for f in FIELDS} for m in METHODS}
        for m in METHODS:
            v = cols[m]
            out[f"{m}@{k}"] = {
                "n_deleted": float(v["n"].mean()),
                "flip_rate": _interval(v["flip"], np.mean, n_boot, rng),
                "lowered_rate": _interval(v["lowered"], np.mean, n_boot, rng),
                "utility_drop_mean": _interval(v["utility_drop"], np.mean, n_boot, rng),
                "utility_drop_median": _interval(v["utility_drop"], np.median, n_boot, rng),
                "quality_drop_mean": _interval(v["quality_drop"], np.mean, n_boot, rng),
            }
        for m in METHODS[:-1]:
            diff = cols[m]["utility_drop"] - cols["random"]["utility_drop"]
            out[f"{m}@{k}"]["vs_random_utility_drop_mean"] = _interval(diff, np.mean, n_boot, rng)
    return out


def _ci(v: list[float], digits: int = 4, scale: float = 1.0) -> str:
    return f"{v[0] * scale:.{digits}f} [{v[1] * scale:.{digits}f}, {v[2] * scale:.{digits}f}]"


def table(summary: dict[str, Any], ks: list[int]) -> str:
    """The markdown table: one row per (k, method)."""
    lines = [
        "| k | latents picked by | n deleted | decision flips | margin lowered | utility-margin drop, mean | median "
        "| quality-margin drop, mean | mean drop − random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        for m in METHODS:
            s = summary[f"{m}@{k}"]
            vs = _ci(s["vs_random_utility_drop_mean"]) if "vs_random_utility_drop_mean" in s else ""
            lines.append(
                f"| {k} | {m} | {s['n_deleted']:.2f} | {_ci(s['flip_rate'], 1, 100)} % "
                f"| {_ci(s['lowered_rate'], 1, 100)} % | {_ci(s['utility_drop_mean'])} "
                f"| {_ci(s['utility_drop_median'])} | {_ci(s['quality_drop_mean'])} | {vs} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, default=ROOT / "artifacts" / "default-router", help="router directory")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="routing parquet whose test split is used")
    p.add_argument("--n", type=int, default=200, help="test prompts (hash-ordered subsample); 0 = all")
    p.add_argument("--preset", default="default", help="preset whose λ takes the decision")
    p.add_argument("--ks", default="1,3,8", help="numbers of latents deleted, comma-separated")
    p.add_argument("--draws", type=int, default=5, help="random draws of k active latents per prompt")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples over prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    p.add_argument(
        "--screen-all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also delete every active latent alone, to see whether the explanation's screen misses stronger ones",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "deletion" / "deletion.json")
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from router_models.artifact.load import load_router
    from router_models.data import load_dataset, subsample

    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",") if k]
    ds = load_dataset(args.data)
    ds = subsample(ds, 0, args.n or None)
    texts = [str(t) for t in ds.prompts[np.asarray(ds.splits) == "test"]]
    router = load_router(args.artifact)
    lam = router.presets[args.preset]
    router.decoder_directions()  # read once here, not inside the first timed explanation
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    with threadpool_limits(args.threads):
        scores = router.scores_from_features(_features(router, texts), texts)
        feats_s = time.perf_counter() - started
        prompts = [_one_prompt(router, s, lam, ks, args.draws, rng, args.screen_all) for s in scores]
    summary = summarize(prompts, ks, args.boot, args.seed)
    text = table(summary, ks)
    explain_ms = np.array([p["explain_ms"] for p in prompts])
    flips = int(sum(p["deletions"][f"cited@{ks[0]}"]["flip"] for p in prompts))
    notes = (
        f"{len(prompts)} test prompts of {args.data.name}, router {args.artifact.name}, preset {args.preset} "
        f"(λ={lam:.4g}); features {feats_s:.0f}s (cached or computed); explanation with its deletion screen: "
        f"median {np.median(explain_ms):.0f} ms, p90 {np.percentile(explain_ms, 90):.0f} ms "
        f"on {args.threads} thread(s); "
        f"median utility margin {np.median([p['utility_margin'] for p in prompts]):.4f}, "
        f"median latents cited {np.median([p['n_cited'] for p in prompts]):.0f}, "
        f"median active {np.median([p['n_active'] for p in prompts]):.0f}; "
        f"decisions flipped by the first cited latent: {flips}"
    )
    if args.screen_all:
        sa = [p["screen_all"] for p in prompts]
        best_found = np.mean([s["cited_first_drop"] >= s["best_drop"] - 1e-9 for s in sa])
        ratio = [s["cited_first_drop"] / s["best_drop"] for s in sa if s["best_drop"] > 0]
        rank = np.median([s["cited_first_rank"] or 0 for s in sa])
        notes += (
            f". Deleting every active latent alone: the explanation's first latent is the best of all active "
            f"latents on {100 * best_found:.0f}% of prompts (median rank {rank:.0f}; "
            f"median share of the best single drop {np.median(ratio) if ratio else float('nan'):.2f}); "
            f"median active latents whose deletion lowers the margin: {np.median([s['n_lowering'] for s in sa]):.0f}"
        )
    print(text)
    print(notes)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(["python -m benchmarks.deletion", *(argv if argv is not None else sys.argv[1:])]),
        "n_prompts": len(prompts),
        "lambda": lam,
        "uptime": load,
        "cpus": os.cpu_count(),
        "summary": summary,
        "table": text,
        "notes": notes,
        "prompts": prompts,
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(f"uptime: {load}\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

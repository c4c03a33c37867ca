"""Onboarding a new model from a few labelled prompts, without retraining anything else.

    python -m benchmarks.onboarding --model gpt-4o-mini-2024-07-18

On the default router's data (zeroeval_gsm_math, models with results on every prompt): a router is trained
without ``--model``; the model is then onboarded from N of its train-split results (N = 50, 100, 200, 500,
picked by a stable hash) and every version is scored on the test split with the full pool, next to a router
trained with the model from the start. The table goes between the ``onboarding-table`` markers of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eval_all import DEFAULT_DATA, _f, update_results
from router_models.data import load_dataset


def main(argv: list[str] | None = None) -> int:
    from router_models.data import validation_split
    from router_models.decide.costs import parse_prices
    from router_models.evaluate.metrics import evaluate_router
    from router_models.features.cache import cached_features
    from router_models.features.spec import FeatureSpec
    from router_models.train.onboard import onboard
    from router_models.train.selection import fit_router

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "zeroeval_gsm_math.parquet")
    p.add_argument("--sae", default="artifacts/sae/smollm2-l15")
    p.add_argument("--model", default="gpt-4o-mini-2024-07-18")
    p.add_argument("--sizes", default="50,100,200,500")
    p.add_argument("--max-train", type=int, default=800, help="train prompts (stable hash) for the two base fits")
    p.add_argument("--candidates", default="probe,cluster", help="scorer candidates of the base fits")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    ds = load_dataset(args.data)
    from router_models.data import subsample
    from router_models.train.selection import default_candidates

    ds = ds.select_models([m for j, m in enumerate(ds.models) if not np.isnan(ds.scores[:, j]).any()])
    ds = subsample(ds, args.max_train, None)
    cands = {k: v for k, v in default_candidates().items() if k in args.candidates.split(",")}
    prices = parse_prices(json.loads((args.data.parent / "prices.json").read_text())[ds.name])
    train, test = ds.split("train"), ds.split("test")
    texts = [str(t) for t in train.prompts] + [str(t) for t in test.prompts]
    feats, bcfg, encoder = cached_features(args.sae, texts)
    n = train.n_prompts
    f_train, f_test = feats.rows(slice(None, n)), feats.rows(slice(n, None))
    spec = FeatureSpec.from_encoder(bcfg, encoder, args.sae, int(feats.dense.shape[1]))
    val = validation_split(train)[1]
    test_texts = [str(t) for t in test.prompts]
    j_new = train.models.index(args.model)

    def score(router: Any) -> dict[str, Any]:
        q, c = router.predict(f_test, test_texts)
        order = [router.models.index(m) for m in test.models]
        res = evaluate_router(q[:, order], c[:, order], test.scores, test.costs, tuple(test.models))
        d = router.presets["default"]
        picks = np.argmax(q - d * c, axis=1)
        res["share_new"] = float(np.mean(np.array(router.models)[picks] == args.model))
        return res

    results: dict[str, dict[str, Any]] = {}
    full, _ = fit_router(f_train, train, val, spec=spec, prices=prices, candidates=cands, ensemble=False)
    results["trained with it (reference)"] = score(full)
    others = [m for m in train.models if m != args.model]
    base, _ = fit_router(
        f_train, train.select_models(others), val, spec=spec, prices=prices, candidates=cands, ensemble=False
    )
    rank = np.array([int(hashlib.sha1(str(pid).encode()).hexdigest(), 16) for pid in train.prompt_ids])
    for size in [int(s) for s in args.sizes.split(",")]:
        pick = np.argsort(rank)[:size]
        new = onboard(
            base,
            args.model,
            f_train.rows(pick),
            train.scores[pick, j_new],
            texts=[str(train.prompts[i]) for i in pick],
            costs=train.costs[pick, j_new],
            price=prices[args.model],
        )
        results[f"onboarded from N={size}"] = score(new)
    # "without it": the router cannot pick the held-out model (its column is NaN, never chosen); scored on the
    # full pool so every row shares the same reference points.
    q, c = base.predict(f_test, test_texts)
    q_full, c_full = np.full(test.scores.shape, np.nan), np.ones(test.scores.shape)
    for j, m in enumerate(test.models):
        if m in base.models:
            q_full[:, j], c_full[:, j] = q[:, base.models.index(m)], c[:, base.models.index(m)]
    wo = evaluate_router(q_full, c_full, test.scores, test.costs, tuple(test.models))
    wo["share_new"] = 0.0
    results = {"without it": wo, **results}
    lines = [
        f"Held-out model: `{args.model}`; pool: {len(train.models)} models; train prompts {train.n_prompts} "
        f"(stable-hash subsample); test prompts: {test.n_prompts}; candidates: {args.candidates}.",
        "",
        "| router | auc | cost_at_95 | peak_quality | share of calls to the new model (default preset) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {_f(r['auc'])} | {_f(r['cost_at_95'])} | {_f(r['peak_quality'])} | {_f(r['share_new'])} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        update_results(table, "onboarding-table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

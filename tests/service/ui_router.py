"""A small trained router for the ``/ui`` tests: ``fit_router`` on the shared synthetic routing data, with
feature labels and a test report (curves and reference points, report.json's layout) like a real artifact.

Prompts route by keyword (``greeting``, ``math``, ``code``, ``history`` pick a synthetic topic), so the
tests can pick prompts that land on different models. Built once per session (a fit takes seconds).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from router_fakes import PRICES, fast_candidates, make_routing, one_blas_thread, topic_features

from router_models.evaluate.metrics import reference_points, reference_report
from router_models.features.pooling import PromptFeatures
from router_models.features.spec import FeatureSpec
from router_models.router import TrainedRouter
from router_models.train.selection import fit_router

__all__ = ["TOPICS", "ui_router"]

TOPICS = ("greeting", "math", "code", "history")  # keyword -> synthetic topic 0..3
LABELS = ("greeting words", "digits and operators", "code tokens", "dates and names")


SPEC = FeatureSpec("SmolLM2-135M-Instruct", 512, 64, True, (9,), 9, d_sae=32, d_model=16)  # synthetic: 2 × 32 latents


@functools.cache
def ui_router() -> TrainedRouter:
    syn = make_routing(120, seed=0)
    candidates = {k: c for k, c in fast_candidates().items() if k in ("probe", "knn", "cluster")}

    def featurize(texts: Sequence[str]) -> PromptFeatures:
        topic = np.array([next((k for k, w in enumerate(TOPICS) if w in t), 0) for t in texts])
        return topic_features(topic, syn.centres, syn.projection, np.random.default_rng(0))

    with one_blas_thread():
        router, _ = fit_router(
            syn.features, syn.ds, spec=SPEC, prices=PRICES, candidates=candidates, featurize=featurize
        )
        curve = router.evaluate(syn.features, syn.ds)
    # every latent gets a label naming the topic whose centre it belongs to most (as labels.json would)
    owner = np.argmax(syn.centres, axis=0)
    latents = {str(i): {"label": f"{LABELS[owner[i]]} #{i}"} for i in range(syn.centres.shape[1])}
    refs = reference_report(reference_points(syn.ds.scores, syn.ds.costs, syn.ds.models))
    test = {
        "dataset": syn.ds.name,
        "n_train": syn.ds.n_prompts,
        "n_test": syn.ds.n_prompts,
        "models": list(syn.ds.models),
        "reference": refs,
        "routers": {f"sae-router ({router.scorer_name})": curve},
    }
    report = {**router.report, "data": {"dataset": syn.ds.name, "n_train": syn.ds.n_prompts, "folds": 5}, "test": test}
    # a made-up decoder (latent → dense direction) lets explanations measure each latent's effect by deletion
    decoder = np.random.default_rng(0).normal(0, 0.5, (SPEC.d_sae, SPEC.d_model)).astype(np.float32)
    return replace(router, labels={"latents": latents}, report=report, decoder=decoder)

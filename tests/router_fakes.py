"""Seeded synthetic routing data with cluster structure, for the scorer / router / artifact tests.

``make_routing`` builds prompts in K topics. Features: a non-negative sparse 64-wide "SAE" row (topic centre
+ noise, ReLU'd) and a 16-wide dense row (a random projection of it + noise). Model j answers a topic-k prompt
correctly with probability ``ACCURACY[k, j]``; costs follow per-model token prices with per-model output
lengths. A few scores are missing (NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from router_models.data import RoutingDataset
from router_models.decide.costs import ModelPrice
from router_models.features.pooling import PromptFeatures
from router_models.scorers import ClusterScorer, KNNScorer, ProbeScorer
from router_models.train.calibration import PresetTarget
from router_models.train.selection import Candidate

__all__ = [
    "ACCURACY",
    "MODELS",
    "PRESET_TARGETS",
    "PRICES",
    "Synthetic",
    "fast_candidates",
    "featurizer",
    "make_routing",
    "one_blas_thread",
    "topic_features",
]

MODELS = ("cheap", "coder", "mid", "strong")
# rows: topics 0..3; cheap is good only on topic 0, coder on topic 2, strong everywhere.
ACCURACY = np.array(
    [
        [0.90, 0.30, 0.80, 0.95],
        [0.15, 0.30, 0.70, 0.90],
        [0.10, 0.90, 0.40, 0.85],
        [0.20, 0.20, 0.50, 0.90],
    ]
)
PRICES = {
    "cheap": ModelPrice(0.1, 0.1),
    "coder": ModelPrice(0.3, 0.6),
    "mid": ModelPrice(0.5, 1.5),
    "strong": ModelPrice(5.0, 15.0),
}
OUT_TOKENS = np.array([200.0, 300.0, 250.0, 400.0])
PRESET_TARGETS = {
    "quality": PresetTarget("lambda", 0.0),
    "balanced": PresetTarget("quality_share", 0.95),
    "cheap": PresetTarget("cost_share", 0.30),
    "few_strong": PresetTarget("model_share", 0.25, "strong"),
}


@dataclass(frozen=True)
class Synthetic:
    ds: RoutingDataset
    features: PromptFeatures
    topic: np.ndarray  # [n]
    centres: np.ndarray  # [K, 64]
    projection: np.ndarray  # [64, 16]


def topic_features(
    topic: np.ndarray, centres: np.ndarray, projection: np.ndarray, rng: np.random.Generator
) -> PromptFeatures:
    x = np.maximum(centres[topic] + rng.normal(0, 0.6, (len(topic), centres.shape[1])), 0.0).astype(np.float32)
    dense = (x @ projection + rng.normal(0, 0.3, (len(topic), projection.shape[1]))).astype(np.float32)
    return PromptFeatures(
        sp.csr_matrix(x), dense, rng.random(len(topic)).astype(np.float32), rng.integers(5, 50, len(topic))
    )


def make_routing(n: int = 300, seed: int = 0, split: str = "train", missing: float = 0.05) -> Synthetic:
    rng = np.random.default_rng(seed)
    K, d = ACCURACY.shape[0], 64
    centres = np.where(rng.random((K, d)) < 0.25, rng.gamma(2.0, 1.0, (K, d)), 0.0) - 0.3
    projection = rng.normal(0, 1 / np.sqrt(d), (d, 16))
    topic = rng.integers(0, K, n)
    feats = topic_features(topic, centres, projection, rng)
    scores = (rng.random((n, len(MODELS))) < ACCURACY[topic]).astype(float)
    scores[rng.random(scores.shape) < missing] = np.nan
    scores[np.isnan(scores).all(axis=1), 3] = 1.0
    prompts = np.array([f"prompt {i} on topic {t} " + "x" * int(rng.integers(20, 400)) for i, t in enumerate(topic)])
    in_tok = np.ceil(np.array([len(p) for p in prompts]) / 4)
    p_in = np.array([PRICES[m].input_per_mtok or 0.0 for m in MODELS])
    p_out = np.array([PRICES[m].output_per_mtok or 0.0 for m in MODELS])
    out_tok = OUT_TOKENS * rng.uniform(0.8, 1.2, (n, len(MODELS)))
    costs = (in_tok[:, None] * p_in + out_tok * p_out) / 1e6
    costs[np.isnan(scores)] = np.nan
    ds = RoutingDataset(
        name=f"synthetic{seed}",
        prompt_ids=np.array([f"p{i:04d}" for i in range(n)], dtype=object),
        prompts=prompts.astype(object),
        tasks=np.array([f"topic{t}" for t in topic], dtype=object),
        splits=np.array([split] * n, dtype=object),
        models=MODELS,
        scores=scores,
        costs=costs,
    )
    return Synthetic(ds, feats, topic, centres, projection)


def featurizer(texts: Sequence[str], feats: PromptFeatures) -> Callable[[Sequence[str]], PromptFeatures]:
    """A featurize function that looks each text up among ``texts`` and returns its rows of ``feats``."""
    index = {t: i for i, t in enumerate(texts)}

    def featurize(batch: Sequence[str]) -> PromptFeatures:
        rows = np.array([index[t] for t in batch], dtype=np.int64)
        return feats.rows(rows)

    return featurize


def fast_candidates() -> dict[str, Candidate]:
    """Small grids so a full fit takes seconds on two cores."""
    return {
        "probe": Candidate(lambda: ProbeScorer(Cs=(0.1, 1.0), top_k=(8, 32)), "sae"),
        "sae_knn": Candidate(lambda: KNNScorer(ks=(5, 20), name="sae_knn"), "sae"),
        "dense": Candidate(lambda: ProbeScorer(Cs=(0.1, 1.0), name="dense"), "dense"),
        "knn": Candidate(lambda: KNNScorer(ks=(5, 20)), "dense"),
        "cluster": Candidate(lambda: ClusterScorer(ks=(4, 8), temperatures=(0.0, 0.3)), "dense"),
    }


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Tiny fits run several times faster on one BLAS thread than with threads fighting over shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: OpenMP start-up per op costs more than the math on a busy 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

"""The runtime router: prompt texts in, per-model quality and cost, a decision and its explanation out.

In:  fitted pieces (from :func:`router_models.train.selection.fit_router`, or
     :func:`router_models.artifact.load.load_router` on a directory).
Out: a :class:`TrainedRouter`, a :class:`~router_models.decide.engine.RoutingEngine`: ``score_batch(texts)``
     runs backbone → SAE → scorer → calibration and the cost model; ``decide`` / ``explain`` on top.

Roles inside a router: ``scorer`` predicts the ``n_base`` models it was trained on (any kind); ``probe``
(pooled SAE features) explains decisions; ``clusters`` (UniRoute k-means) carries per-cluster costs and
models onboarded later (:mod:`router_models.train.onboard`), whose quality comes from ``probe`` or ``clusters``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.decide.costs import CostModel, ModelPrice
from router_models.decide.engine import (
    Constraints,
    Decision,
    PromptScores,
    decide,
    explain_decision,
    resolve_lambda,
    runner_up,
)
from router_models.decide.explain import explain_pair
from router_models.evaluate.metrics import evaluate_router
from router_models.features.spec import FeatureSpec
from router_models.scorers import BlendScorer, ClusterScorer, ProbeScorer, weighted_sum
from router_models.train.calibration import Calibrator

if TYPE_CHECKING:
    from router_models.data import RoutingDataset
    from router_models.features.pooling import PromptFeatures

__all__ = ["Featurize", "TrainedRouter"]

Featurize = Callable[[Sequence[str]], "PromptFeatures"]


@dataclass
class TrainedRouter:
    """A fitted router. Implements :class:`router_models.decide.engine.RoutingEngine`.

    ``models[:n_base]`` are predicted by ``scorer`` (reading ``scorer_features``: "sae", "dense" or "all" for a
    blend); ``models[n_base:]`` were onboarded and read ``probe`` or ``clusters`` (``onboarded[name]``).
    """

    models: tuple[str, ...]
    n_base: int
    scorer: Any
    scorer_name: str
    scorer_features: str
    calibrator: Calibrator
    costs: CostModel
    preset_table: dict[str, dict[str, Any]]
    probe: ProbeScorer | None = None  # over "sae" features
    clusters: ClusterScorer | None = None
    cluster_features: str = "dense"
    cost_groups: bool = False  # CostModel groups = nearest cluster of ``clusters``
    onboarded: dict[str, str] = field(default_factory=dict)
    feature_widths: dict[str, int] = field(default_factory=dict)  # {"sae": d_sae·poolings, "dense": d_model}
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    spec: FeatureSpec | None = None
    labels: dict[str, Any] | None = None
    report: dict[str, Any] = field(default_factory=dict)  # selection, calibration, test metrics, data
    featurize: Featurize | None = field(default=None, repr=False)
    _version: str | None = field(default=None, repr=False)

    # -------------------------------------------------------------------------------- engine protocol
    @property
    def version(self) -> str:
        """Short hash of manifest + weights (the manifest records the weights' sha256)."""
        if self._version is None:
            from router_models.artifact.format import version_of
            from router_models.artifact.save import serialize

            self._version = version_of(serialize(self)[0])
        return self._version

    @property
    def presets(self) -> dict[str, float]:
        return {name: float(p["lambda"]) for name, p in self.preset_table.items()}

    def score_batch(self, texts: Sequence[str]) -> list[PromptScores]:
        if self.featurize is None:
            raise RuntimeError(
                "this router has no feature function: load it with load_backbone=True or pass featurize="
            )
        return self.scores_from_features(self.featurize(list(texts)), texts)

    def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        out = explain_pair(
            self.models,
            scores,
            chosen,
            runner_up,
            probe=self.probe,
            clusters=self.clusters,
            labels=self.labels,
            d_sae=self.spec.d_sae if self.spec else None,
            pooling=self.spec.pooling if self.spec else ("max", "mean"),
        )
        out["scorer"] = self.scorer_name
        if self.probe is not None and self.scorer_name != "probe":
            out["note"] = f"served scorer is {self.scorer_name!r}; feature contributions come from the SAE probe"
        return out

    # ------------------------------------------------------------------------------------ prediction
    def feature_views(self, feats: PromptFeatures) -> dict[str, Any]:
        return {"sae": feats.sparse, "dense": feats.dense}

    def predict(self, feats: PromptFeatures, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated quality [n, m] and expected cost [n, m] of every model."""
        q, c, _ = self._predict(self.feature_views(feats), texts)
        return q, c

    def _predict(
        self, views: Mapping[str, Any], texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, float, np.ndarray]]]:
        """(calibrated quality, expected cost, the ensemble's parts as (name, features, weight, raw quality
        [n, n_base]); empty unless the served scorer is an ensemble)."""
        parts: list[tuple[str, str, float, np.ndarray]] = []
        if isinstance(self.scorer, BlendScorer):
            s = self.scorer
            preds = [np.asarray(q)[:, : self.n_base] for q in s.predict_parts(views)]
            parts = [(p.name, k, w, q) for p, k, w, q in zip(s.parts, s.kinds, s.weights, preds, strict=True)]
            raw = weighted_sum(s.weights, preds)
        else:
            x = views if self.scorer_features == "all" else views[self.scorer_features]
            raw = np.asarray(self.scorer.predict_quality(x))[:, : self.n_base]
        if self.onboarded:
            extra = self._onboarded_quality(views)
            raw = np.hstack([raw, extra])
        groups = None
        if self.cost_groups and self.clusters is not None:
            groups = self.clusters.assign(views[self.cluster_features])
        return self.calibrator.apply(raw), self.costs.predict(texts, groups), parts

    def _onboarded_quality(self, views: Mapping[str, Any]) -> np.ndarray:
        q_probe = self.probe.predict_quality(views["sae"]) if self.probe is not None else None
        q_clust = self.clusters.predict_quality(views[self.cluster_features]) if self.clusters is not None else None
        cols = []
        for j, name in enumerate(self.models[self.n_base :], start=self.n_base):
            source = q_probe if self.onboarded[name] == "probe" else q_clust
            assert source is not None, f"onboarded model {name!r} needs the router's {self.onboarded[name]}"
            cols.append(source[:, j])
        return np.stack(cols, axis=1)

    def scores_from_features(self, feats: PromptFeatures, texts: Sequence[str]) -> list[PromptScores]:
        """One PromptScores per prompt; ``features`` is the pooled SAE row (dense float32) for explanations."""
        q, c, parts = self._predict(self.feature_views(feats), texts)
        nearest: list[list[list[float]]] = [[] for _ in texts]
        if self.clusters is not None:
            w = self.clusters.weights(self.feature_views(feats)[self.cluster_features])
            top = np.argsort(-w, axis=1, kind="stable")[:, :3]
            nearest = [[[int(k), float(w[i, k])] for k in top[i] if w[i, k] > 1e-3] for i in range(len(texts))]
        rows = feats.sparse.toarray().astype(np.float32)
        return [
            PromptScores(
                quality=q[i],
                cost=c[i],
                features=rows[i],
                extras={
                    "recon_error": float(feats.recon_error[i]),
                    "n_tokens": int(feats.n_tokens[i]),
                    **({"clusters": nearest[i]} if nearest[i] else {}),
                    **({"ensemble": [[n, k, w, pq[i].tolist()] for n, k, w, pq in parts]} if parts else {}),
                },
            )
            for i in range(len(texts))
        ]

    def decide(
        self,
        prompt: str | PromptScores,
        lam: float | str = "default",
        constraints: Constraints | None = None,
        explain: bool = False,
    ) -> Decision:
        """Route one prompt (text, or its scores) at λ or a preset name; ``explain`` attaches the explanation."""
        scores = self.score_batch([prompt])[0] if isinstance(prompt, str) else prompt
        value, _ = resolve_lambda(None, lam, self.presets) if isinstance(lam, str) else (lam, None)
        d = decide(self.models, scores, value, constraints)
        if not explain:
            return d
        return replace(d, explanation=explain_decision(self.explain(scores, d.model, runner_up(d)), d))

    def evaluate(self, feats: PromptFeatures, ds: RoutingDataset) -> dict[str, Any]:
        """Quality–cost curve and metrics on a labelled split (e.g. test), report.json's per-router layout."""
        missing = [m for m in self.models if m not in ds.models]
        if missing:
            raise ValueError(f"{ds.name}: no results for model(s) {missing}")
        ds = ds.select_models(self.models)
        q, c = self.predict(feats, [str(p) for p in ds.prompts])
        return evaluate_router(q, c, ds.scores, ds.costs, self.models)

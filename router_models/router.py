"""The runtime router: prompt texts in, per-model quality and cost, a decision and its explanation out.

In:  fitted pieces (from :func:`router_models.train.selection.fit_router`, or
     :func:`router_models.artifact.load.load_router` on a directory).
Out: a :class:`TrainedRouter`, a :class:`~router_models.decide.engine.RoutingEngine`: ``score_batch(texts)``
     runs backbone → SAE → scorer → calibration and the cost model; ``decide`` / ``explain`` on top.

``explain`` cites the SAE latents whose deletion (:mod:`router_models.features.intervene`) most lowers the
served margin of the choice over the runner-up, measured by re-scoring the edited features with the served
scorer, calibration and cost model in one batch (:meth:`TrainedRouter.rescore`).

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
from router_models.decide.explain import (
    CITED,
    candidate_latents,
    explain_pair,
    measured_effects,
    probe_contributions,
)
from router_models.evaluate.metrics import evaluate_router
from router_models.features.intervene import active_latents, decoder_directions, delete_latents
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
    decoder: np.ndarray | None = field(default=None, repr=False)  # [d_sae, d_model]; read from spec.sae_dir if None
    explain_candidates: int = 32  # latents whose deletion ``explain`` measures (one batched re-score)
    _version: str | None = field(default=None, repr=False)
    _decoder_read: bool = field(default=False, repr=False)

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
    def runtime(self) -> str | None:
        """What runs the backbone's blocks ("onnx" or "torch"), once the feature function has loaded it."""
        backbone = getattr(self.featurize, "backbone", None)
        return None if backbone is None else str(backbone.runtime)

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
        """Why ``chosen`` over ``runner_up``: every screened latent's measured effect on the served margins
        (``features``, ``deletion``; :func:`~router_models.decide.engine.explain_decision` ranks them at the
        decision's λ), the SAE probe's logit decomposition (``probe``) and each part's and cluster's view."""
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
        if scores.features is not None and "dense" in scores.extras and self.spec is not None:
            out |= self._deletion_effects(scores, chosen, runner_up)
            out["note"] = (
                f"features: measured by deleting each latent and re-scoring with the served {self.scorer_name!r} "
                "scorer; 'probe' decomposes the SAE probe's own logits"
            )
        return out

    def _deletion_effects(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        """``features``: the screened latents with their measured Δ margins; ``deletion``: how they were measured."""
        assert self.spec is not None and scores.features is not None
        x = np.asarray(scores.features, dtype=np.float32).ravel()
        i, r = self.models.index(chosen), None if runner_up is None else self.models.index(runner_up)
        contrib = None
        if self.probe is not None:
            contrib = probe_contributions(self.probe, x, i, r).values
        cands = candidate_latents(x, self.spec.d_sae, self.explain_candidates, contrib)
        q, c, dense_edited = self.rescore(scores, [[], *([int(k)] for k in cands)])
        feats = measured_effects(q, c, i, r, cands, x, self.labels, self.spec.d_sae, self.spec.pooling, contrib)
        deletion = {
            "active_latents": int(active_latents(x, self.spec.d_sae).size),
            "screened": len(cands),
            "dense_edited": dense_edited,
            "top_n": CITED,
        }
        return {"features": feats, "deletion": deletion}

    def decoder_directions(self) -> np.ndarray | None:
        """The SAE's decoder directions ``[d_sae, d_model]`` for the dense edit, read once from ``spec.sae_dir``;
        None without an SAE folder or when the dense row is not its target (a RouteSAE)."""
        if self.decoder is None and not self._decoder_read:
            self._decoder_read = True
            sae_dir = self.spec.sae_dir if self.spec is not None else None
            if sae_dir is not None and sae_dir.is_dir():
                from router_models.features.encoder import make_encoder

                self.decoder = decoder_directions(make_encoder(sae_dir))
        return self.decoder

    def rescore(self, scores: PromptScores, deletions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, bool]:
        """Served quality and cost ``[b, m]`` of one prompt with each set of latents ``deletions[b]`` deleted from
        every feature view (:func:`~router_models.features.intervene.delete_latents`), in one batched call through
        the served scorer, calibration and cost model; and whether the dense view was edited too.

        Needs ``scores.features`` (the pooled SAE row) and ``scores.extras["dense"]`` (the dense row). The cost
        moves only when the edit moves the prompt to another cost group (:meth:`CostModel.regroup`); an empty
        set reproduces ``scores``."""
        assert self.spec is not None and scores.features is not None, "needs a feature spec and the SAE row"
        dense = np.asarray(scores.extras["dense"], dtype=np.float32)
        decoder = self.decoder_directions()
        deletions = [[], *deletions]  # row 0: the unedited prompt, for its cost group
        views = delete_latents(scores.features, dense, deletions, self.spec.d_sae, self.spec.pooling, decoder)
        q, _ = self._quality(views)
        groups = self._cost_groups(views)
        if groups is None:
            c = np.repeat(np.asarray(scores.cost, dtype=np.float64)[None, :], len(deletions), axis=0)
        else:
            c = self.costs.regroup(np.asarray(scores.cost, dtype=np.float64), int(groups[0]), groups)
        return q[1:], c[1:], decoder is not None

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
        q, parts = self._quality(views)
        return q, self.costs.predict(texts, self._cost_groups(views)), parts

    def _cost_groups(self, views: Mapping[str, Any]) -> np.ndarray | None:
        if self.cost_groups and self.clusters is not None:
            return np.asarray(self.clusters.assign(views[self.cluster_features]))
        return None

    def _quality(self, views: Mapping[str, Any]) -> tuple[np.ndarray, list[tuple[str, str, float, np.ndarray]]]:
        """(calibrated quality [n, m], the ensemble's parts: see :meth:`_predict`)."""
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
        return self.calibrator.apply(raw), parts

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
        """One PromptScores per prompt; ``features`` (the pooled SAE row, dense float32) and ``extras["dense"]``
        (the dense row, as a list so that it survives the gateway's JSON cache) are kept for explanations."""
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
                    "dense": feats.dense[i].tolist(),
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

"""The trained router: what serving needs, as one object and as one directory on disk.

In:  fitted pieces (from :func:`router_models.selection.fit_router`, or :func:`load_router` on a directory).
Out: a :class:`TrainedRouter`, a :class:`~router_models.engine.RoutingEngine`: ``score_batch(texts)`` runs
     backbone → SAE → scorer → calibration and the cost model; ``decide`` / ``explain`` on top.

On disk (``save_router``), never pickle::

    router/
      manifest.json        format version, backbone and SAE settings, models and prices, scorer kind and
                           hyperparameters, calibration methods, presets, selection / test metrics,
                           training-data fingerprints, library versions, sha256 and shapes of the weights
      weights.safetensors  every numeric array (probe coef/intercept/mean/scale, cluster centroids/profiles,
                           kNN matrix, isotonic knots, cost tables); header metadata repeats the model list
      labels.json          SAE feature labels (optional)
      sae/                 the SAE the features come from (sae-lens folder or RouteSAE folder)

:func:`load_router` checks, in order: the manifest's format version, the sha256 of the weights file, the model
list against the weights' own, the SAE width against the feature width, and every array's shape against the
model count and feature widths the manifest declares; any mismatch raises :class:`ArtifactError` naming the
file, the array and both numbers. Library versions that differ in what computes features (torch,
transformers, sae-lens) give an :class:`ArtifactWarning`.

Roles inside a router: ``scorer`` predicts the ``n_base`` models it was trained on (any kind); ``probe``
(pooled SAE features) explains decisions; ``clusters`` (UniRoute k-means) carries per-cluster costs and
models onboarded later (:mod:`router_models.onboard`), whose quality comes from ``probe`` or ``clusters``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router_models.calibration import Calibrator
from router_models.costs import CostModel, ModelPrice
from router_models.engine import Constraints, Decision, PromptScores, decide
from router_models.evaluate import evaluate_router
from router_models.explain import explain_pair
from router_models.scorers import (
    BlendScorer,
    ClusterScorer,
    ProbeScorer,
    blend_part_tags,
    scorer_from_state,
    scorer_state,
    weighted_sum,
)

if TYPE_CHECKING:
    from router_models.backbone import Backbone, BackboneConfig
    from router_models.data import RoutingDataset
    from router_models.features import PromptFeatures, SAEEncoder

__all__ = [
    "DEFAULT_ARTIFACT",
    "FORMAT_VERSION",
    "ArtifactError",
    "ArtifactWarning",
    "FeatureSpec",
    "Featurize",
    "TrainedRouter",
    "library_versions",
    "load_router",
    "save_router",
]

FORMAT_VERSION = 1
DEFAULT_ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "default-router"  # the bundled router
MANIFEST, WEIGHTS, LABELS, SAE_DIR = "manifest.json", "weights.safetensors", "labels.json", "sae"
# A version change of these can change the features. The SAE is encoded by sae_inference.py (our code, checked
# against sae-lens by a parity test), so sae-lens, which serving does not install, is recorded but not checked.
FEATURE_LIBRARIES = ("torch", "transformers")
LIBRARIES = (*FEATURE_LIBRARIES, "sae-lens", "scikit-learn", "numpy", "scipy", "safetensors")

Featurize = Callable[[Sequence[str]], "PromptFeatures"]


class ArtifactError(ValueError):
    """A router directory is missing, corrupted or inconsistent; the message says what differs."""


class ArtifactWarning(UserWarning):
    """A router was saved with other versions of the libraries that compute its features."""


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """How prompt features are computed: backbone, SAE and pooling (the manifest's ``features`` block)."""

    backbone: str  # packaged name, folder or hub id (BackboneConfig.name)
    max_tokens: int
    head_tokens: int
    chat_template: bool
    layers: tuple[int, ...]  # layers the SAE reads
    reference_layer: int  # layer of the dense (mean-pooled hidden state) features
    d_sae: int
    d_model: int
    sae_kind: str = "sae"  # "sae" | "routesae"
    fingerprint: str = ""  # SAEEncoder.fingerprint of the SAE weights
    pooling: tuple[str, ...] = ("max", "mean")
    sae_dir: Path | None = None  # where the SAE folder is now (copied into the artifact as sae/)

    @property
    def n_features(self) -> int:
        """Width of the pooled SAE feature row: d_sae per pooling block."""
        return self.d_sae * len(self.pooling)

    @classmethod
    def from_encoder(
        cls,
        cfg: BackboneConfig,
        encoder: SAEEncoder,
        sae_dir: str | Path,
        d_model: int,
        pooling: Sequence[str] = ("max", "mean"),
    ) -> FeatureSpec:
        """The spec of features computed by ``extract_features(Backbone.load(cfg), encoder, ..., pooling)``."""
        return cls(
            backbone=cfg.name,
            max_tokens=cfg.max_tokens,
            head_tokens=cfg.head_tokens,
            chat_template=cfg.chat_template,
            layers=tuple(encoder.layers),
            reference_layer=encoder.reference_layer,
            d_sae=encoder.d_sae,
            d_model=d_model,
            sae_kind=encoder.kind,
            fingerprint=encoder.fingerprint,
            pooling=tuple(pooling),
            sae_dir=Path(sae_dir),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backbone": {
                "name": self.backbone,
                "max_tokens": self.max_tokens,
                "head_tokens": self.head_tokens,
                "chat_template": self.chat_template,
            },
            "layers": list(self.layers),
            "reference_layer": self.reference_layer,
            "pooling": list(self.pooling),
            "sae": {
                "path": f"{SAE_DIR}/" if self.sae_dir is not None else None,
                "kind": self.sae_kind,
                "d_sae": self.d_sae,
                "fingerprint": self.fingerprint,
            },
            "d_model": self.d_model,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], root: Path) -> FeatureSpec:
        b, sae = d["backbone"], d["sae"]
        return cls(
            backbone=b["name"],
            max_tokens=int(b["max_tokens"]),
            head_tokens=int(b["head_tokens"]),
            chat_template=bool(b["chat_template"]),
            layers=tuple(int(x) for x in d["layers"]),
            reference_layer=int(d["reference_layer"]),
            d_sae=int(sae["d_sae"]),
            d_model=int(d["d_model"]),
            sae_kind=sae["kind"],
            fingerprint=sae["fingerprint"],
            pooling=tuple(d["pooling"]),
            sae_dir=root / sae["path"] if sae.get("path") else None,
        )


# ------------------------------------------------------------------------------------------ the router


@dataclass
class TrainedRouter:
    """A fitted router. Implements :class:`router_models.engine.RoutingEngine`.

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
            self._version = _version_of(_serialize(self)[0])
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

    def explain(
        self, scores: PromptScores, chosen: str, runner_up: str | None, lam: float | None = None
    ) -> dict[str, Any]:
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
            lam=lam,
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
        if isinstance(lam, str):
            if lam not in self.preset_table:
                raise ValueError(f"unknown preset {lam!r}; presets: {sorted(self.preset_table)}")
            lam = float(self.preset_table[lam]["lambda"])
        d = decide(self.models, scores, lam, constraints)
        if not explain:
            return d
        runner_up = d.ranking[1] if len(d.ranking) > 1 else None
        detail = self.explain(scores, d.model, runner_up, lam)
        detail["lambda_interval"] = list(d.lambda_interval)
        return replace(d, explanation=detail)

    def evaluate(self, feats: PromptFeatures, ds: RoutingDataset) -> dict[str, Any]:
        """Quality–cost curve and metrics on a labelled split (e.g. test), report.json's per-router layout."""
        missing = [m for m in self.models if m not in ds.models]
        if missing:
            raise ValueError(f"{ds.name}: no results for model(s) {missing}")
        ds = ds.select_models(self.models)
        q, c = self.predict(feats, [str(p) for p in ds.prompts])
        return evaluate_router(q, c, ds.scores, ds.costs, self.models)


# ---------------------------------------------------------------------------------------- serialization


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, non-finite floats to None, tuples to lists."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _serialize(router: TrainedRouter) -> tuple[dict[str, Any], bytes]:
    """(manifest, weights file bytes)."""
    import safetensors.numpy

    arrays: dict[str, np.ndarray] = {}
    roles: dict[str, Any] = {}
    for role, obj, features in (
        ("scorer", router.scorer, router.scorer_features),
        ("probe", router.probe, "sae"),
        ("clusters", router.clusters, router.cluster_features),
    ):
        if obj is None:
            roles[role] = None
            continue
        kind, params, arr = scorer_state(obj)
        roles[role] = {"type": kind, "features": features, "params": params}
        arrays |= {f"{role}.{k}": v for k, v in arr.items()}
    roles["scorer"]["name"] = router.scorer_name
    cal_params, cal_arrays = router.calibrator.to_arrays()
    cost_params, cost_arrays = router.costs.to_arrays()
    arrays |= {f"calibration.{k}": v for k, v in cal_arrays.items()}
    arrays |= {f"costs.{k}": v for k, v in cost_arrays.items()}
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}
    meta = {"format_version": str(FORMAT_VERSION), "models": json.dumps(list(router.models))}
    weights = safetensors.numpy.save(arrays, metadata=meta)
    spec = router.spec
    manifest = {
        "format_version": FORMAT_VERSION,
        "models": [
            {
                "name": m,
                "price": router.prices[m].to_json() if m in router.prices else None,
                "cost_mode": router.costs.mode[j],
                "onboarded": router.onboarded.get(m),
            }
            for j, m in enumerate(router.models)
        ],
        "n_base_models": router.n_base,
        "features": (spec.to_json() if spec else {})
        | {"n_sae_features": router.feature_widths.get("sae"), "n_dense_features": router.feature_widths.get("dense")},
        "labels": LABELS if router.labels is not None else None,
        **roles,
        "calibration": cal_params,
        "costs": cost_params | {"groups": "clusters" if router.cost_groups else None},
        "presets": router.preset_table,
        "report": router.report,
        "versions": library_versions(),
        "weights": {
            "file": WEIGHTS,
            "sha256": hashlib.sha256(weights).hexdigest(),
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
        },
    }
    return _jsonable(manifest), weights


def _version_of(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]


def save_router(router: TrainedRouter, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the router directory (see module docstring); returns its path. The manifest is written last."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty (pass overwrite=True to replace it)")
    path.mkdir(parents=True, exist_ok=True)
    manifest, weights = _serialize(router)
    spec = router.spec
    if spec is not None and spec.sae_dir is not None and spec.sae_dir.resolve() != (path / SAE_DIR).resolve():
        if not spec.sae_dir.is_dir():
            raise FileNotFoundError(f"SAE folder {spec.sae_dir} does not exist; cannot copy it into {path}")
        shutil.rmtree(path / SAE_DIR, ignore_errors=True)
        shutil.copytree(spec.sae_dir, path / SAE_DIR)
    (path / WEIGHTS).write_bytes(weights)
    if router.labels is not None:
        (path / LABELS).write_text(json.dumps(_jsonable(router.labels)))
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp.rename(path / MANIFEST)
    router._version = _version_of(manifest)
    return path


# --------------------------------------------------------------------------------------------- loading


def load_router(path: str | Path, *, load_backbone: bool = True, featurize: Featurize | None = None) -> TrainedRouter:
    """Read and check a router directory. ``featurize`` overrides the feature function; otherwise with
    ``load_backbone`` the backbone and SAE named by the manifest are loaded on first use, and without it
    ``score_batch`` is unavailable (``predict`` on precomputed features still works)."""
    path = Path(path)
    manifest = _read_manifest(path)
    raw = _read_weights(path, manifest)
    arrays, saved_models = _parse_weights(raw)
    models = tuple(m["name"] for m in manifest["models"])
    if saved_models != list(models):
        raise ArtifactError(_model_list_diff(list(models), saved_models))
    _check_shapes(manifest, arrays)
    _check_versions(manifest.get("versions", {}), path)
    spec = FeatureSpec.from_json(manifest["features"], path) if "backbone" in manifest["features"] else None
    labels = _read_labels(path, manifest.get("labels"))
    router = _build(manifest, arrays, models, spec, labels)
    if featurize is not None:
        router.featurize = featurize
    elif load_backbone:
        if spec is None or spec.sae_dir is None or not spec.sae_dir.is_dir():
            raise ArtifactError(
                f"{path}: no {SAE_DIR}/ folder (or no backbone settings) to compute features from; "
                "pass featurize= or load_backbone=False"
            )
        router.featurize = BackboneFeaturizer(spec)
    router._version = _version_of(manifest)
    return router


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST} (not a trained router directory)")
    try:
        manifest: dict[str, Any] = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{file}: format_version {version!r}, but this library reads format {FORMAT_VERSION}")
    return manifest


def _read_labels(path: Path, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    try:
        labels: dict[str, Any] = json.loads((path / name).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path / name}: the manifest names it but it cannot be read ({exc})") from exc
    return labels


def _read_weights(path: Path, manifest: Mapping[str, Any]) -> bytes:
    file = path / manifest["weights"]["file"]
    if not file.is_file():
        raise ArtifactError(f"{path}: missing {file.name}")
    raw = file.read_bytes()
    digest, expected = hashlib.sha256(raw).hexdigest(), manifest["weights"]["sha256"]
    if digest != expected:
        raise ArtifactError(
            f"{file.name}: sha256 {digest[:16]}… does not match the manifest's {str(expected)[:16]}… "
            "(the weights were modified or corrupted after saving)"
        )
    return raw


def _parse_weights(raw: bytes) -> tuple[dict[str, np.ndarray], list[str]]:
    import safetensors.numpy

    try:
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {})
        arrays = safetensors.numpy.load(raw)
    except Exception as exc:  # any parse failure of the file is one error for the caller
        raise ArtifactError(f"{WEIGHTS}: cannot be read as safetensors ({type(exc).__name__}: {exc})") from exc
    return arrays, json.loads(meta.get("models", "[]"))


def _model_list_diff(manifest_models: list[str], saved: list[str]) -> str:
    missing, extra = [m for m in saved if m not in manifest_models], [m for m in manifest_models if m not in saved]
    detail = []
    if missing:
        detail.append(f"missing from the manifest: {missing}")
    if extra:
        detail.append(f"not in the weights: {extra}")
    if not detail:
        detail.append("same models in a different order")
    return f"{MANIFEST} lists models {manifest_models} but {WEIGHTS} was saved for {saved} ({'; '.join(detail)})"


def _check_shapes(manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Every array against the model count and feature widths the manifest declares."""
    m, n_base = len(manifest["models"]), int(manifest["n_base_models"])
    feats = manifest["features"]
    widths = _widths(manifest)
    sae = feats.get("sae")
    if sae is not None:
        n_pool = len(feats["pooling"])
        if sae["d_sae"] * n_pool != widths["sae"]:
            raise ArtifactError(
                f"{MANIFEST}: SAE width d_sae={sae['d_sae']} × {n_pool} poolings = {sae['d_sae'] * n_pool} "
                f"features, but n_sae_features is {widths['sae']}"
            )
        if feats["d_model"] != widths["dense"]:
            raise ArtifactError(
                f"{MANIFEST}: backbone d_model={feats['d_model']} but n_dense_features is {widths['dense']}"
            )
    for role, n_models in (("scorer", n_base), ("probe", m), ("clusters", m)):
        block = manifest.get(role)
        if block is not None:
            _check_scorer(role, block["type"], block["features"], block["params"], arrays, n_models, widths)
    for name, shape, what in (
        ("calibration.offsets", (m + 1,), f"{m} models + 1"),
        ("calibration.platt", (m, 2), f"{m} models × 2"),
        ("costs.price_in", (m,), f"{m} models"),
        ("costs.price_out", (m,), f"{m} models"),
        ("costs.fixed", (m,), f"{m} models"),
        ("costs.out_tokens", (None, m), f"groups × {m} models"),
    ):
        _expect(arrays, name, shape, what)


def _widths(manifest: Mapping[str, Any]) -> dict[str, int | None]:
    feats = manifest["features"]
    return {"sae": feats.get("n_sae_features"), "dense": feats.get("n_dense_features")}


def _check_scorer(
    prefix: str,
    kind: str,
    features: str,
    params: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    m: int,
    widths: Mapping[str, int | None],
) -> None:
    if kind == "blend":
        if len(params["parts"]) != len(params["kinds"]) or len(params["parts"]) != len(params.get("weights", [])):
            raise ArtifactError(f"{MANIFEST}: {prefix} lists {len(params['parts'])} parts, kinds or weights unequally")
        tags = blend_part_tags(len(params["parts"]))
        for tag, part, feat in zip(tags, params["parts"], params["kinds"], strict=True):
            _check_scorer(f"{prefix}.{tag}", part["type"], feat, part["params"], arrays, m, widths)
        return
    d = widths.get(features)
    fw = f"{d} features" if d is not None else "features"
    Shapes = dict[str, tuple[tuple[int | None, ...], str]]
    table: dict[str, Shapes] = {
        "probe": {
            "coef": ((m, d), f"{m} models × {fw}"),
            "intercept": ((m,), f"{m} models"),
            "mean": ((d,), fw),
            "scale": ((d,), fw),
        },
        "cluster": {
            "centroids": ((None, d), f"clusters × {fw}"),
            "profile": ((None, m), f"clusters × {m} models"),
            "counts": ((None, m), f"clusters × {m} models"),
        },
        "knn": {"x": ((None, d), f"prompts × {fw}"), "s": ((None, m), f"prompts × {m} models")},
    }
    if kind == "knn" and "sparse_shape" in params:
        n_rows, width = params["sparse_shape"]
        if d is not None and width != d:
            raise ArtifactError(f"{MANIFEST}: {prefix} stores {width} features but the router has {fw}")
        nnz = arrays[f"{prefix}.x_data"].shape if f"{prefix}.x_data" in arrays else (None,)
        table["knn"] = {
            "x_data": (nnz, "non-zeros"),
            "x_indices": (nnz, "non-zeros"),
            "x_indptr": ((n_rows + 1,), f"{n_rows} prompts + 1"),
            "s": ((n_rows, m), f"{n_rows} prompts × {m} models"),
        }
    expected = table.get(kind)
    if expected is None:
        raise ArtifactError(f"{MANIFEST}: {prefix} has unknown scorer type {kind!r}")
    for name, (shape, what) in expected.items():
        _expect(arrays, f"{prefix}.{name}", shape, what)


def _expect(arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int | None, ...], what: str) -> None:
    if name not in arrays:
        raise ArtifactError(f"{WEIGHTS}: no array {name!r}, which the manifest's scorer needs")
    got = arrays[name].shape
    if len(got) != len(shape) or any(e is not None and g != e for g, e in zip(got, shape, strict=False)):
        raise ArtifactError(f"{WEIGHTS}: {name} has shape {tuple(got)} but manifest says {what}")


def _check_versions(saved: Mapping[str, Any], path: Path) -> None:
    now = library_versions()
    diff = [f"{k} {saved.get(k)} → {now[k]}" for k in FEATURE_LIBRARIES if saved.get(k) != now[k]]
    if diff:
        warnings.warn(
            f"{path}: saved with other library versions ({', '.join(diff)}); features may differ: check it with "
            f"`sae-router verify --artifact {path}`",
            ArtifactWarning,
            stacklevel=3,
        )


def _sub(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _build(
    manifest: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    models: tuple[str, ...],
    spec: FeatureSpec | None,
    labels: dict[str, Any] | None,
) -> TrainedRouter:
    def role(name: str) -> Any:
        block = manifest.get(name)
        return None if block is None else scorer_from_state(block["type"], block["params"], _sub(arrays, name))

    from router_models.costs import parse_prices

    prices = parse_prices({m["name"]: m["price"] for m in manifest["models"] if m.get("price") is not None})
    clusters_block = manifest.get("clusters") or {}
    return TrainedRouter(
        models=models,
        n_base=int(manifest["n_base_models"]),
        scorer=role("scorer"),
        scorer_name=manifest["scorer"]["name"],
        scorer_features=manifest["scorer"]["features"],
        calibrator=Calibrator.from_arrays(manifest["calibration"], _sub(arrays, "calibration")),
        costs=CostModel.from_arrays(models, manifest["costs"], _sub(arrays, "costs")),
        preset_table=copy.deepcopy(manifest["presets"]),
        probe=role("probe"),
        clusters=role("clusters"),
        cluster_features=clusters_block.get("features", "dense"),
        cost_groups=manifest["costs"].get("groups") == "clusters",
        onboarded={m["name"]: m["onboarded"] for m in manifest["models"] if m.get("onboarded")},
        feature_widths={k: int(v) for k, v in _widths(manifest).items() if v is not None},
        prices=prices,
        spec=spec,
        labels=labels,
        report=copy.deepcopy(manifest.get("report", {})),
    )


class BackboneFeaturizer:
    """The default feature function: backbone + SAE from the manifest, loaded on first call, checked
    against the manifest (SAE width, layers, fingerprint; backbone width)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._loaded: tuple[Backbone, SAEEncoder] | None = None

    def __call__(self, texts: Sequence[str]) -> PromptFeatures:
        from router_models.features import extract_features

        backbone, encoder = self._loaded or self._load()
        return extract_features(backbone, encoder, texts, pooling=self.spec.pooling)

    def _load(self) -> tuple[Backbone, SAEEncoder]:
        from router_models.backbone import Backbone, BackboneConfig
        from router_models.features import make_encoder

        s = self.spec
        assert s.sae_dir is not None
        encoder = make_encoder(s.sae_dir)
        found = {"d_sae": encoder.d_sae, "layers": tuple(encoder.layers), "fingerprint": encoder.fingerprint}
        wanted = {"d_sae": s.d_sae, "layers": s.layers, "fingerprint": s.fingerprint}
        diff = [f"{k} {found[k]} (manifest: {wanted[k]})" for k in found if found[k] != wanted[k]]
        if diff:
            raise ArtifactError(f"{s.sae_dir}: the SAE does not match the manifest: {', '.join(diff)}")
        cfg = BackboneConfig(
            name=s.backbone, max_tokens=s.max_tokens, head_tokens=s.head_tokens, chat_template=s.chat_template
        )
        backbone = Backbone.load(cfg)
        if backbone.d_model != s.d_model:
            raise ArtifactError(f"backbone {s.backbone!r} has d_model {backbone.d_model}, manifest says {s.d_model}")
        self._loaded = (backbone, encoder)
        return self._loaded

"""Routing datasets: how well, and at what cost, each LLM answered each benchmark prompt.

In:  a routing table file. Either the canonical long schema (``.parquet``, ``.jsonl`` with one JSON object
     per line, or ``.csv``), one row per (prompt, model) with columns
     ``prompt_id, prompt, task, split, model, score, cost_usd`` (see /work/shared/data/routing/README.md;
     a missing score is an absent row), or RouterBench's published wide pickle (``.pkl`` / ``.pickle``).
Out: a :class:`RoutingDataset`: per-prompt ``prompt_ids``, ``prompts``, ``tasks``, ``splits`` ``[n]`` and
     ``scores``, ``costs`` ``[n, m]`` (NaN where a model has no result on a prompt), rows sorted by
     prompt_id and models sorted by name.

Every problem with a file raises :class:`DatasetError` naming the file, the column and up to five
offending rows, so a bad table fails at load time rather than deep inside training.

RouterBench pickle layout (withmartian/routerbench, arXiv:2403.12031): one row per prompt with
``sample_id``, ``prompt``, ``eval_name``, one score column per model named after the model,
``<model>|total_cost`` and ``<model>|model_response``; other columns are ignored. It becomes
prompt_id = sample_id, task = eval_name, cost_usd = ``<model>|total_cost``; the split comes from a
``split`` column if there is one, else the shared data's rule (``test`` iff sha1(prompt_id) % 5 == 0).
Prompts stored as a one-string Python list literal (``"['...']"``) are unwrapped. **Reading a pickle
executes code stored in the file**: load only pickles you trust. It is accepted here because it is the
format RouterBench publishes; artifacts of this project never use it.

    ds = load_dataset("/work/shared/data/routing/dcrouter.parquet")
    train = ds.split("train")
    fit, val = validation_split(train)
"""

from __future__ import annotations

import ast
import hashlib
import json
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLITS",
    "DatasetError",
    "RoutingDataset",
    "cv_folds",
    "from_long_frame",
    "load_dataset",
    "normalize_prompt",
    "task_folds",
    "task_groups",
    "validation_split",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("prompt_id", "prompt", "task", "split", "model", "score", "cost_usd")
TEXT_COLUMNS: tuple[str, ...] = ("prompt_id", "prompt", "task", "split", "model")
SPLITS: tuple[str, ...] = ("train", "test")
ROUTERBENCH_COLUMNS: tuple[str, ...] = ("sample_id", "prompt", "eval_name")
COST_SUFFIX = "|total_cost"
_SAMPLE_SIZE = 5  # offending rows quoted in an error message
_SHOWN_CHARS = 60  # long prompts are cut to this in error messages


class DatasetError(ValueError):
    """A routing table is missing, unreadable or breaks the schema; the message says where."""


@dataclass(frozen=True, eq=False)
class RoutingDataset:
    """Scores and costs of ``m`` models on ``n`` prompts. Arrays are read-only; methods return new datasets."""

    name: str  # file stem, e.g. "dcrouter"
    prompt_ids: np.ndarray  # [n] object (str), unique
    prompts: np.ndarray  # [n] object (str)
    tasks: np.ndarray  # [n] object (str)
    splits: np.ndarray  # [n] object (str), each in SPLITS
    models: tuple[str, ...]  # [m]; sorted when loaded, caller's order after select_models
    scores: np.ndarray  # [n, m] float64 in [0, 1], NaN where the model has no result on that prompt
    costs: np.ndarray  # [n, m] float64 USD, NaN where missing

    def __post_init__(self) -> None:
        n, m = len(self.prompt_ids), len(self.models)
        for field in ("prompt_ids", "prompts", "tasks", "splits"):
            self._freeze(field, np.asarray(getattr(self, field), dtype=object), (n,))
        for field in ("scores", "costs"):
            self._freeze(field, np.asarray(getattr(self, field), dtype=np.float64), (n, m))
        object.__setattr__(self, "models", tuple(self.models))

    def _freeze(self, field: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
        if array.shape != shape:
            raise ValueError(f"{self.name}: {field} has shape {array.shape}, expected {shape}")
        view = array.view()
        view.flags.writeable = False
        object.__setattr__(self, field, view)

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def subset(self, rows: np.ndarray) -> RoutingDataset:
        """The prompts picked by ``rows``: a boolean mask ``[n]`` or distinct integer indices."""
        index = _row_index(np.asarray(rows), self.n_prompts)
        return replace(
            self,
            prompt_ids=self.prompt_ids[index],
            prompts=self.prompts[index],
            tasks=self.tasks[index],
            splits=self.splits[index],
            scores=self.scores[index],
            costs=self.costs[index],
        )

    def split(self, name: str) -> RoutingDataset:
        """The prompts of split ``name`` (``train`` or ``test``); raises if there are none."""
        if name not in SPLITS:
            raise DatasetError(f"{self.name}: column 'split': unknown split {name!r}; expected one of {SPLITS}")
        mask = self.splits == name
        if not mask.any():
            raise DatasetError(f"{self.name}: column 'split': no prompts in split {name!r}")
        return self.subset(mask)

    def select_models(self, models: Sequence[str]) -> RoutingDataset:
        """Keep only ``models``, in the given order."""
        if isinstance(models, str):
            raise TypeError("select_models takes a sequence of model names, not one string")
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise DatasetError(f"{self.name}: unknown model(s) {unknown}; known models: {list(self.models)}")
        if not models or len(set(models)) != len(models):
            raise DatasetError(f"{self.name}: select_models needs distinct model names, got {list(models)}")
        cols = [self.models.index(m) for m in models]
        return replace(self, models=tuple(models), scores=self.scores[:, cols], costs=self.costs[:, cols])

    def drop_unscored_models(self) -> RoutingDataset:
        """Drop models with no score on any prompt left (e.g. after keeping one task of zeroeval_gsm_math)."""
        keep = [m for m, scored in zip(self.models, ~np.isnan(self.scores).all(axis=0), strict=True) if scored]
        return self.select_models(keep)

    def drop_prompts(self, texts: Iterable[str]) -> RoutingDataset:
        """Drop prompts whose normalised text is among ``texts`` (cross-file dedupe, see the data README)."""
        banned = {normalize_prompt(t) for t in texts}
        return self.subset(np.array([normalize_prompt(p) not in banned for p in self.prompts], dtype=bool))

    def fingerprint(self) -> str:
        """SHA-256 hex of the content (ids, texts, tasks, splits, models, scores, costs); not of ``name``."""
        digest = hashlib.sha256()
        for values in (self.prompt_ids, self.prompts, self.tasks, self.splits, self.models):
            digest.update(json.dumps([str(v) for v in values]).encode())
        for matrix in (self.scores, self.costs):
            # One NaN bit pattern and no -0.0, so equal content always hashes equally.
            canonical = np.where(np.isnan(matrix), np.nan, matrix + 0.0).astype("<f8")
            digest.update(np.ascontiguousarray(canonical).tobytes())
        return digest.hexdigest()

    def to_long_frame(self) -> pd.DataFrame:
        """The canonical long schema: one row per (prompt, model) with a score, in row-major order."""
        rows, cols = np.nonzero(~np.isnan(self.scores))
        return pd.DataFrame(
            {
                "prompt_id": self.prompt_ids[rows],
                "prompt": self.prompts[rows],
                "task": self.tasks[rows],
                "split": self.splits[rows],
                "model": np.asarray(self.models, dtype=object)[cols],
                "score": self.scores[rows, cols],
                "cost_usd": self.costs[rows, cols],
            }
        )


def normalize_prompt(text: str) -> str:
    """The data README's prompt normalisation: Unicode NFKC, lower-case, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _row_index(rows: np.ndarray, n: int) -> np.ndarray:
    """Integer indices from a boolean mask [n] or an array of distinct indices."""
    if rows.dtype == np.bool_:
        if rows.shape != (n,):
            raise ValueError(f"boolean mask has shape {rows.shape}, expected ({n},)")
        return np.flatnonzero(rows)
    if rows.size == 0:
        return np.zeros(0, dtype=np.intp)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be a boolean mask or 1-D integer indices, got {rows.dtype} {rows.shape}")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("rows contains repeated indices; a prompt may appear only once")
    return rows


# --- validation -------------------------------------------------------------------------------------


def _show(value: object) -> str:
    if isinstance(value, str):
        cut = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        return repr(cut)
    return str(value)


def _fail(source: str, column: str, problem: str, bad: pd.DataFrame, shown: Sequence[str]) -> NoReturn:
    """Raise a DatasetError quoting up to five offending rows (their ``shown`` columns)."""
    sample = [
        " ".join(f"{c}={_show(v)}" for c, v in row.items())
        for row in bad[list(shown)].head(_SAMPLE_SIZE).to_dict("records")
    ]
    more = f" (and {len(bad) - _SAMPLE_SIZE} more)" if len(bad) > _SAMPLE_SIZE else ""
    raise DatasetError(f"{source}: column {column!r}: {len(bad)} row(s) {problem}, e.g. {'; '.join(sample)}{more}")


def _check_columns(df: pd.DataFrame, required: Sequence[str], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{source}: missing required column(s) {missing}; the file has columns {[str(c) for c in df.columns]}"
        )


def _text_columns(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Reject missing text values (and empty ids or model names); cast the text columns to str."""
    for col in TEXT_COLUMNS:
        missing = df[col].isna()
        if col in ("prompt_id", "model"):
            missing |= df[col].astype(str) == ""
        if missing.any():
            _fail(source, col, "have no value", df[missing], ("prompt_id", "model"))
    return df.assign(**{c: df[c].astype(str) for c in TEXT_COLUMNS})


def _as_float(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """Column ``col`` as float64; a present value that is not a number is an error, a missing one is NaN."""
    values = pd.to_numeric(df[col], errors="coerce")
    not_number = values.isna() & df[col].notna()
    if not_number.any():
        _fail(source, col, "are not numbers", df[not_number], ("prompt_id", "model", col))
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_values(df: pd.DataFrame, source: str) -> None:
    """Scores in [0, 1], costs finite and >= 0, splits known."""
    score, cost = df["score"].to_numpy(), df["cost_usd"].to_numpy()
    bad_score = ~((score >= 0) & (score <= 1))  # NaN compares False, so it is caught too
    if bad_score.any():
        _fail(source, "score", "outside [0, 1] or NaN", df[bad_score], ("prompt_id", "model", "score"))
    bad_cost = ~(np.isfinite(cost) & (cost >= 0))
    if bad_cost.any():
        _fail(source, "cost_usd", "negative, infinite or NaN", df[bad_cost], ("prompt_id", "model", "cost_usd"))
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        _fail(source, "split", f"not one of {SPLITS}", df[bad_split], ("prompt_id", "model", "split"))


def _check_keys(df: pd.DataFrame, source: str) -> None:
    """One row per (prompt_id, model); one prompt, task and split per prompt_id."""
    dup = df.duplicated(["prompt_id", "model"], keep=False)
    if dup.any():
        bad = df[dup].drop_duplicates(["prompt_id", "model"])
        _fail(source, "prompt_id, model", "repeat a (prompt_id, model) pair", bad, ("prompt_id", "model"))
    distinct = df.groupby("prompt_id", sort=False)[["prompt", "task", "split"]].nunique()
    for col in ("prompt", "task", "split"):
        ids = distinct.index[distinct[col] > 1]
        if len(ids):
            bad = df[df["prompt_id"].isin(ids)].drop_duplicates(["prompt_id", col])
            _fail(source, col, "disagree with another row of the same prompt_id", bad, ("prompt_id", "model", col))


# --- building ---------------------------------------------------------------------------------------


def from_long_frame(df: pd.DataFrame, name: str, source: str = "<frame>") -> RoutingDataset:
    """Validate a canonical long table and pivot it to a RoutingDataset; ``source`` names it in errors."""
    if len(df) == 0:
        raise DatasetError(f"{source}: no rows")
    _check_columns(df, REQUIRED_COLUMNS, source)
    df = _text_columns(df[list(REQUIRED_COLUMNS)], source)
    df = df.assign(score=_as_float(df, "score", source), cost_usd=_as_float(df, "cost_usd", source))
    _check_values(df, source)
    _check_keys(df, source)
    return _pivot(df, name)


def _pivot(df: pd.DataFrame, name: str) -> RoutingDataset:
    """Scatter validated long rows into [n, m] matrices (vectorised; no loop over rows)."""
    row, prompt_ids = pd.factorize(df["prompt_id"], sort=True)
    col, models = pd.factorize(df["model"], sort=True)
    scores = np.full((len(prompt_ids), len(models)), np.nan)
    costs = np.full_like(scores, np.nan)
    scores[row, col] = df["score"].to_numpy(dtype=np.float64)
    costs[row, col] = df["cost_usd"].to_numpy(dtype=np.float64)
    first = np.unique(row, return_index=True)[1]  # first long row of each prompt, in prompt_id order
    return RoutingDataset(
        name=name,
        prompt_ids=np.asarray(prompt_ids, dtype=object),
        prompts=df["prompt"].to_numpy(dtype=object)[first],
        tasks=df["task"].to_numpy(dtype=object)[first],
        splits=df["split"].to_numpy(dtype=object)[first],
        models=tuple(str(m) for m in models),
        scores=scores,
        costs=costs,
    )


def _hash_split(prompt_id: str) -> str:
    """The shared data's split rule for sources without one: test iff sha1(prompt_id) % 5 == 0."""
    digest = hashlib.sha1(prompt_id.encode(), usedforsecurity=False).hexdigest()
    return "test" if int(digest, 16) % 5 == 0 else "train"


def _unwrap_prompt(value: object) -> object:
    """RouterBench stores some prompts as ``"['text']"``: return ``text`` for a one-string list literal."""
    if not isinstance(value, str) or not value.lstrip().startswith("["):
        return value
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], str):
        return parsed[0]
    return value


def _routerbench_to_long(wide: pd.DataFrame, source: str) -> pd.DataFrame:
    """RouterBench's wide table -> canonical long rows; NaN score cells become absent rows."""
    _check_columns(wide, ROUTERBENCH_COLUMNS, source)
    wide = wide.reset_index(drop=True)  # columns below are aligned on the index
    models = sorted(c.removesuffix(COST_SUFFIX) for c in wide.columns if isinstance(c, str) and c.endswith(COST_SUFFIX))
    if not models:
        raise DatasetError(
            f"{source}: no '<model>{COST_SUFFIX}' columns; the file has {[str(c) for c in wide.columns]}"
        )
    _check_columns(wide, models, source)  # each priced model needs its score column
    ids = wide["sample_id"].astype(str)
    meta = pd.DataFrame(
        {
            "prompt_id": ids,
            "prompt": wide["prompt"].map(_unwrap_prompt),
            "task": wide["eval_name"],
            "split": wide["split"] if "split" in wide.columns else ids.map(_hash_split),
        }
    )
    long = pd.concat(
        [meta.assign(model=m, score=wide[m], cost_usd=wide[m + COST_SUFFIX]) for m in models], ignore_index=True
    )
    long["score"] = _as_float(long, "score", source)
    scored = long.groupby("model")["score"].count()
    if (scored == 0).any():
        empty = list(scored.index[scored == 0])
        raise DatasetError(f"{source}: column(s) {empty}: model has no scores at all (every value is NaN)")
    return long[long["score"].notna()]


# --- files ------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with path.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return pd.DataFrame.from_records(records)


def _read_csv(path: Path) -> pd.DataFrame:
    # Everything as text, so ids like "001" and prompts like "NA" survive; numbers are parsed in validation.
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _read_pickle(path: Path) -> pd.DataFrame:
    frame = pd.read_pickle(path)  # runs code from the file: trusted RouterBench files only
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(f"{path}: expected a pickled pandas DataFrame, got {type(frame).__name__}")
    return frame


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".parquet": pd.read_parquet,
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".pkl": _read_pickle,
    ".pickle": _read_pickle,
}


def load_dataset(path: str | Path) -> RoutingDataset:
    """Read a routing table (format from the suffix), validate it and return it as a RoutingDataset."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unknown suffix {path.suffix!r}; expected one of {sorted(_READERS)}")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")
    try:
        frame = reader(path)
    except DatasetError:
        raise
    except Exception as exc:  # parquet, csv and pickle errors are translated here, once
        raise DatasetError(f"{path}: cannot read as {path.suffix}: {type(exc).__name__}: {exc}") from exc
    if reader is _read_pickle:
        frame = _routerbench_to_long(frame, str(path))
    return from_long_frame(frame, path.stem, str(path))


def validation_split(ds: RoutingDataset, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(fit, val)`` [n] over a train-only dataset; ``val`` has round(fraction * n) prompts.

    Prompts are ranked by sha256(seed, prompt_id), so the split is the same in every run and for every
    row order, and does not depend on numpy's RNG.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = _hash_order(ds, seed, "validation_split")
    if ds.n_prompts < 2:
        raise DatasetError(f"{ds.name}: validation_split needs at least 2 prompts, got {ds.n_prompts}")
    n_val = min(max(round(fraction * ds.n_prompts), 1), ds.n_prompts - 1)
    val = np.zeros(ds.n_prompts, dtype=bool)
    val[order[:n_val]] = True
    return ~val, val


def cv_folds(ds: RoutingDataset, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id in ``0..k-1`` per prompt [n] of a train-only dataset, sizes differing by at most one.

    Prompts are ranked by sha256(seed, prompt_id) (as in :func:`validation_split`) and dealt round-robin, so
    the folds do not depend on row order or numpy's RNG.
    """
    order = _hash_order(ds, seed, "cv_folds")
    if not 2 <= k <= ds.n_prompts:
        raise DatasetError(f"{ds.name}: cv_folds needs 2 ≤ k ≤ {ds.n_prompts} prompts, got k={k}")
    folds = np.empty(ds.n_prompts, dtype=np.int64)
    folds[order] = np.arange(ds.n_prompts) % k
    return folds


def task_groups(tasks: Iterable[object], min_shared: int = 3) -> np.ndarray:
    """Task family per row [n]: the dataset prefix (``file:``, from :func:`~router_models.train.router.combine`)
    dropped, and a subject suffix cut where at least ``min_shared`` distinct tasks share the part before their
    first ``_`` (``mmlu-redux_anatomy`` → ``mmlu-redux``; ``arc_challenge`` alone stays ``arc_challenge``).

    Leave-one-task-out evaluation holds out one family, and task-grouped cross-validation folds by family, so
    30 MMLU subjects count as one task, not 30.
    """
    names = [str(t).split(":")[-1] for t in tasks]
    heads: dict[str, set[str]] = {}
    for name in set(names):
        if "_" in name:
            heads.setdefault(name.split("_", 1)[0], set()).add(name)
    shared = {h for h, members in heads.items() if len(members) >= min_shared}
    family = [n.split("_", 1)[0] if "_" in n else n for n in names]
    return np.array([f if f in shared else n for f, n in zip(family, names, strict=True)], dtype=object)


def task_folds(ds: RoutingDataset) -> np.ndarray:
    """Fold id per prompt [n] of a train-only dataset: one fold per task family (:func:`task_groups`), so every
    out-of-fold prediction comes from a fit that saw no prompt of its task. Raises with fewer than 2 families."""
    _hash_order(ds, 0, "task_folds")  # train rows only
    groups = task_groups(ds.tasks)
    names = sorted(set(groups))
    if len(names) < 2:
        raise DatasetError(f"{ds.name}: task-grouped folds need at least 2 task families, found {names}")
    return np.array([names.index(g) for g in groups], dtype=np.int64)


def _hash_order(ds: RoutingDataset, seed: int, caller: str) -> np.ndarray:
    """Row indices of a train-only dataset sorted by sha256(seed, prompt_id): a row-order-free permutation."""
    outside = sorted(set(ds.splits[ds.splits != "train"]))
    if outside:
        raise DatasetError(f"{ds.name}: column 'split': {caller} needs train rows only, found {outside}")
    keys = np.array([_rank_key(seed, pid) for pid in ds.prompt_ids], dtype=np.uint64)
    return np.argsort(keys, kind="stable")


def _rank_key(seed: int, prompt_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()[:8], "big")


def subsample(ds: RoutingDataset, max_train: int | None, max_test: int | None) -> RoutingDataset:
    """At most ``max_train`` / ``max_test`` prompts per split, picked by a hash of prompt_id (stable)."""
    rank = np.array([int(hashlib.sha1(str(p).encode()).hexdigest(), 16) % 10**9 for p in ds.prompt_ids])
    keep = np.zeros(ds.n_prompts, dtype=bool)
    for split, cap in (("train", max_train), ("test", max_test)):
        rows = np.flatnonzero(np.asarray(ds.splits) == split)
        if cap is not None and len(rows) > cap:
            rows = rows[np.argsort(rank[rows], kind="stable")[:cap]]
        keep[rows] = True
    return ds.subset(keep)

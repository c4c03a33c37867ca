"""Tests for router_models.data: loading, validation errors, RouterBench pickles, dataset operations.

Every table is built here from tiny frames, so the tests need no shared data; the last test also loads
the shared parquets when /work/shared is present. Run: ``pytest -q tests/test_data.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router_models.data import (
    REQUIRED_COLUMNS,
    DatasetError,
    RoutingDataset,
    cv_folds,
    from_long_frame,
    load_dataset,
    validation_split,
)

SHARED = Path(__file__).parents[2] / "shared" / "data" / "routing"
MODELS = ("big", "mid", "small")


def long_frame() -> pd.DataFrame:
    """4 prompts x 3 models, rows shuffled; p3 has no row for "mid"."""
    prompts = {
        "p1": ("What is 2+2?", "math", "train"),
        "p2": ("Name a colour.", "trivia", "train"),
        "p3": ("Write a haiku.", "writing", "test"),
        "p4": ("NA", "trivia", "train"),  # a prompt that naive CSV readers turn into NaN
    }
    rows = []
    for i, (pid, (text, task, split)) in enumerate(prompts.items()):
        for j, model in enumerate(MODELS):
            if (pid, model) != ("p3", "mid"):
                rows.append((pid, text, task, split, model, (i + j) % 2 * 1.0, 0.001 * (j + 1) + 0.0001 * i))
    frame = pd.DataFrame(rows, columns=list(REQUIRED_COLUMNS))
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def write(frame: pd.DataFrame, path: Path) -> Path:
    """Write a long frame in the format its suffix names."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        raise AssertionError(path)
    return path


def routerbench_frame() -> pd.DataFrame:
    """RouterBench's wide layout: one row per prompt, score / cost / response columns per model."""
    return pd.DataFrame(
        {
            "sample_id": ["arc.val.1", "mbpp.dev.0", "wino.val.3"],
            "prompt": ["['Which is a mammal?\\nA. cat']", "plain prompt", "['two', 'strings']"],
            "eval_name": ["arc-challenge", "mbpp", "winogrande"],
            "gpt-4": [1.0, 0.0, np.nan],
            "gpt-4|total_cost": [0.01, 0.02, 0.03],
            "gpt-4|model_response": ["A", "def f(): pass", "x"],
            "llama": [0.0, 1.0, 1.0],
            "llama|total_cost": [0.001, 0.002, 0.003],
            "llama|model_response": ["B", "", "y"],
            "oracle_model_to_route_to": ["gpt-4", "llama", "llama"],
        }
    )


@pytest.fixture
def ds() -> RoutingDataset:
    return from_long_frame(long_frame(), "tiny")


# --- building and round trips -----------------------------------------------------------------------


def test_from_long_frame_pivots_sorted_with_nan_for_missing(ds: RoutingDataset) -> None:
    assert ds.name == "tiny"
    assert (ds.n_prompts, ds.n_models) == (4, 3)
    assert list(ds.prompt_ids) == ["p1", "p2", "p3", "p4"]
    assert ds.models == MODELS
    assert ds.scores.shape == ds.costs.shape == (4, 3)
    assert ds.scores.dtype == ds.costs.dtype == np.float64
    assert np.isnan(ds.scores[2, 1]) and np.isnan(ds.costs[2, 1])
    assert np.isnan(ds.scores).sum() == 1
    assert list(ds.tasks) == ["math", "trivia", "writing", "trivia"]
    assert list(ds.splits) == ["train", "train", "test", "train"]
    assert ds.prompts[3] == "NA"
    assert ds.scores[1, 2] == 1.0 and ds.costs[1, 2] == pytest.approx(0.0031)


def test_arrays_are_read_only(ds: RoutingDataset) -> None:
    with pytest.raises(ValueError, match="read-only"):
        ds.scores[0, 0] = 0.5


def test_to_long_frame_round_trips(ds: RoutingDataset) -> None:
    frame = ds.to_long_frame()
    assert list(frame.columns) == list(REQUIRED_COLUMNS)
    assert len(frame) == 11 and not frame.isna().any().any()
    expected = long_frame().sort_values(["prompt_id", "model"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.astype({"score": float}), expected, check_dtype=False)
    assert from_long_frame(frame, "again").fingerprint() == ds.fingerprint()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_load_round_trips(tmp_path: Path, ds: RoutingDataset, suffix: str) -> None:
    path = write(ds.to_long_frame(), tmp_path / f"tiny{suffix}")
    loaded = load_dataset(path)
    assert loaded.name == "tiny"
    assert loaded.fingerprint() == ds.fingerprint()
    np.testing.assert_array_equal(loaded.scores, ds.scores)


def test_load_accepts_str_path(tmp_path: Path, ds: RoutingDataset) -> None:
    path = write(ds.to_long_frame(), tmp_path / "tiny.parquet")
    assert load_dataset(str(path)).fingerprint() == ds.fingerprint()


# --- RouterBench pickle -----------------------------------------------------------------------------


def test_routerbench_pickle_conversion(tmp_path: Path) -> None:
    path = tmp_path / "routerbench_0shot.pkl"
    routerbench_frame().to_pickle(path)
    rb = load_dataset(path)
    assert rb.name == "routerbench_0shot"
    assert list(rb.prompt_ids) == ["arc.val.1", "mbpp.dev.0", "wino.val.3"]
    assert rb.models == ("gpt-4", "llama")
    assert rb.prompts[0] == "Which is a mammal?\nA. cat"  # one-string list literal unwrapped
    assert rb.prompts[1] == "plain prompt"
    assert rb.prompts[2] == "['two', 'strings']"  # not a one-string list: kept as stored
    assert list(rb.tasks) == ["arc-challenge", "mbpp", "winogrande"]
    np.testing.assert_array_equal(rb.scores, [[1.0, 0.0], [0.0, 1.0], [np.nan, 1.0]])
    np.testing.assert_allclose(rb.costs, [[0.01, 0.001], [0.02, 0.002], [np.nan, 0.003]])
    # sha1 rule of the data README: test iff int(sha1(prompt_id), 16) % 5 == 0
    assert list(rb.splits) == ["train", "test", "train"]


def test_routerbench_pickle_uses_split_column(tmp_path: Path) -> None:
    path = tmp_path / "rb.pickle"
    routerbench_frame().assign(split=["test", "train", "test"]).to_pickle(path)
    assert list(load_dataset(path).splits) == ["test", "train", "test"]


def test_routerbench_all_nan_model_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rb.pkl"
    routerbench_frame().assign(llama=np.nan).to_pickle(path)
    with pytest.raises(DatasetError, match="no scores at all") as err:
        load_dataset(path)
    assert "rb.pkl" in str(err.value) and "llama" in str(err.value)


def test_routerbench_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "rb.pkl"
    routerbench_frame().drop(columns=["eval_name", "llama"]).to_pickle(path)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert "rb.pkl" in str(err.value) and "eval_name" in str(err.value)


def test_pickle_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "rb.pkl"
    pd.Series([1, 2]).to_pickle(path)
    with pytest.raises(DatasetError, match="DataFrame"):
        load_dataset(path)


# --- validation errors: file, column and an offending row in every message ---------------------------


def load_broken(tmp_path: Path, frame: pd.DataFrame, suffix: str = ".parquet") -> str:
    """Write ``frame``, load it, return the DatasetError message (asserting it names the file)."""
    path = write(frame, tmp_path / f"broken{suffix}")
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    message = str(err.value)
    assert path.name in message
    return message


def with_value(column: str, pid: str, value: object) -> pd.DataFrame:
    frame = long_frame()
    frame[column] = frame[column].astype(object)
    frame.loc[frame["prompt_id"] == pid, column] = value
    return frame


def test_missing_columns_listed_with_existing(tmp_path: Path) -> None:
    message = load_broken(tmp_path, long_frame().drop(columns=["cost_usd", "task"]))
    assert "missing required column(s) ['task', 'cost_usd']" in message
    assert "'prompt_id'" in message and "'score'" in message  # the columns that do exist


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("score", 1.5, "outside [0, 1]"),
        ("score", -0.1, "outside [0, 1]"),
        ("score", np.nan, "outside [0, 1] or NaN"),
        ("cost_usd", -1.0, "negative"),
        ("cost_usd", np.nan, "NaN"),
        ("split", "dev", "not one of"),
    ],
)
def test_bad_values(tmp_path: Path, column: str, value: object, problem: str) -> None:
    message = load_broken(tmp_path, with_value(column, "p2", value))
    assert f"column '{column}'" in message and problem in message
    assert "prompt_id='p2'" in message and "p1" not in message


@pytest.mark.parametrize("column", ["prompt_id", "prompt", "model"])
def test_missing_text_values(tmp_path: Path, column: str) -> None:
    message = load_broken(tmp_path, with_value(column, "p4", None))
    assert f"column '{column}'" in message and "no value" in message
    assert "3 row(s)" in message


def test_non_numeric_score_in_csv(tmp_path: Path) -> None:
    message = load_broken(tmp_path, with_value("score", "p1", "high"), ".csv")
    assert "column 'score'" in message and "not numbers" in message and "prompt_id='p1'" in message


def test_duplicate_pairs(tmp_path: Path) -> None:
    frame = long_frame()
    message = load_broken(tmp_path, pd.concat([frame, frame[frame["prompt_id"] == "p3"]]))
    assert "column 'prompt_id, model'" in message and "prompt_id='p3'" in message
    assert "2 row(s)" in message  # one sample per repeated pair


@pytest.mark.parametrize("column", ["prompt", "task", "split"])
def test_conflicting_prompt_metadata(tmp_path: Path, column: str) -> None:
    frame = long_frame()
    frame.loc[(frame["prompt_id"] == "p1") & (frame["model"] == "mid"), column] = "test"
    message = load_broken(tmp_path, frame)
    assert f"column '{column}'" in message and "disagree" in message and "prompt_id='p1'" in message


def test_sample_is_capped_at_five(tmp_path: Path) -> None:
    frame = pd.concat([long_frame().assign(prompt_id=f"q{i}") for i in range(3)]).assign(score=2.0)
    message = load_broken(tmp_path, frame.drop_duplicates(["prompt_id", "model"]))
    assert message.count("prompt_id=") == 5 and "and 4 more" in message


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_empty_files(tmp_path: Path, suffix: str) -> None:
    (tmp_path / f"empty{suffix}").touch()
    with pytest.raises(DatasetError, match=r"empty\..*empty file"):
        load_dataset(tmp_path / f"empty{suffix}")


def test_no_rows(tmp_path: Path) -> None:
    message = load_broken(tmp_path, long_frame().iloc[:0])
    assert "no rows" in message


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "table.xlsx").write_text("x")
    with pytest.raises(DatasetError, match=r"table\.xlsx: unknown suffix '\.xlsx'"):
        load_dataset(tmp_path / "table.xlsx")
    with pytest.raises(DatasetError, match=r"nope\.parquet: no such file"):
        load_dataset(tmp_path / "nope.parquet")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match=r"junk\.parquet: cannot read"):
        load_dataset(tmp_path / "junk.parquet")
    (tmp_path / "junk.jsonl").write_text('{"prompt_id": "a"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"junk\.jsonl: line 2: not valid JSON"):
        load_dataset(tmp_path / "junk.jsonl")


# --- dataset operations -----------------------------------------------------------------------------


def test_subset_by_mask_and_indices(ds: RoutingDataset) -> None:
    by_mask = ds.subset(np.array([False, True, False, True]))
    by_index = ds.subset(np.array([1, 3]))
    assert list(by_mask.prompt_ids) == list(by_index.prompt_ids) == ["p2", "p4"]
    assert by_mask.fingerprint() == by_index.fingerprint()
    np.testing.assert_array_equal(by_index.scores, ds.scores[[1, 3]])
    assert list(ds.subset(np.array([3, 0])).prompt_ids) == ["p4", "p1"]
    with pytest.raises(ValueError, match="shape"):
        ds.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="repeated"):
        ds.subset(np.array([1, 1]))


def test_split(ds: RoutingDataset) -> None:
    assert list(ds.split("train").prompt_ids) == ["p1", "p2", "p4"]
    test = ds.split("test")
    assert list(test.prompt_ids) == ["p3"] and test.models == ds.models
    with pytest.raises(DatasetError, match="no prompts in split 'train'"):
        test.split("train")
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        ds.split("dev")


def test_select_models(ds: RoutingDataset) -> None:
    picked = ds.select_models(["small", "big"])
    assert picked.models == ("small", "big")
    np.testing.assert_array_equal(picked.scores, ds.scores[:, [2, 0]])
    np.testing.assert_array_equal(picked.costs, ds.costs[:, [2, 0]])
    with pytest.raises(DatasetError, match=r"unknown model\(s\) \['huge'\]; known models: \['big', 'mid', 'small'\]"):
        ds.select_models(["big", "huge"])
    with pytest.raises(DatasetError, match="distinct"):
        ds.select_models(["big", "big"])


def test_drop_unscored_models(ds: RoutingDataset) -> None:
    only_p3 = ds.split("test")  # "mid" has no row for p3
    assert only_p3.drop_unscored_models().models == ("big", "small")


def test_drop_prompts_matches_normalised_text(ds: RoutingDataset) -> None:
    kept = ds.drop_prompts(["  what IS 2+2? ", "na"])
    assert list(kept.prompt_ids) == ["p2", "p3"]


def test_fingerprint_stable_and_sensitive(ds: RoutingDataset) -> None:
    # Pinned: the fingerprint goes into trained-router manifests, so it must not drift between runs.
    assert ds.fingerprint() == "8ead51462a41f47c9e682c3bf1fa7be7ce15f96c521dbef4b3db4f406df40e60"
    assert from_long_frame(long_frame().iloc[::-1], "other-name").fingerprint() == ds.fingerprint()
    changes = [
        with_value("score", "p1", 0.5),
        with_value("cost_usd", "p4", 0.5),
        with_value("prompt", "p2", "Name a color."),
        with_value("split", "p2", "test"),
        long_frame().replace({"model": {"small": "tiny"}}),
        long_frame().iloc[1:],
    ]
    prints = {from_long_frame(frame, "tiny").fingerprint() for frame in changes}
    assert len(prints) == len(changes) and ds.fingerprint() not in prints


def test_validation_split(ds: RoutingDataset) -> None:
    train = ds.split("train")
    fit, val = validation_split(train, fraction=0.34)
    assert fit.dtype == val.dtype == np.bool_
    assert not (fit & val).any() and (fit | val).all() and val.sum() == 1
    again_fit, again_val = validation_split(train, fraction=0.34)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(fit, again_fit)
    reordered = train.subset(np.array([2, 0, 1]))
    _, val_reordered = validation_split(reordered, fraction=0.34)
    assert list(reordered.prompt_ids[val_reordered]) == list(train.prompt_ids[val])
    with pytest.raises(DatasetError, match="train rows only"):
        validation_split(ds)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(train, fraction=1.0)


def test_validation_split_size_and_seed() -> None:
    frame = pd.DataFrame(
        {"prompt_id": [f"id{i}" for i in range(200)], "prompt": "q", "task": "t", "split": "train"}
    ).assign(model="m", score=1.0, cost_usd=0.0)
    big = from_long_frame(frame, "big")
    _, val0 = validation_split(big, fraction=0.2, seed=0)
    _, val1 = validation_split(big, fraction=0.2, seed=1)
    assert val0.sum() == val1.sum() == 40
    assert not np.array_equal(val0, val1)


def test_cv_folds_are_balanced_seeded_and_independent_of_row_order(ds: RoutingDataset) -> None:
    frame = pd.DataFrame(
        {"prompt_id": [f"id{i}" for i in range(103)], "prompt": "q", "task": "t", "split": "train"}
    ).assign(model="m", score=1.0, cost_usd=0.0)
    big = from_long_frame(frame, "big")
    folds = cv_folds(big, 5)
    assert sorted(np.bincount(folds)) == [20, 20, 21, 21, 21]
    order = np.random.default_rng(0).permutation(103)
    again = cv_folds(big.subset(order), 5)
    assert dict(zip(big.prompt_ids[order], again, strict=True)) == dict(zip(big.prompt_ids, folds, strict=True))
    assert not np.array_equal(folds, cv_folds(big, 5, seed=1))
    with pytest.raises(DatasetError, match="train rows only"):
        cv_folds(ds)
    with pytest.raises(DatasetError, match="k=1"):
        cv_folds(big, 1)


# --- the shared data, when present ------------------------------------------------------------------

SHAPES = {
    "dcrouter": (5989, 9),
    "routellm_gsm8k": (1319, 2),
    "routellm_mmlu": (13937, 2),
    "routerbench_subset": (3162, 11),
    "routerdc7": (9842, 7),
    "zeroeval_gsm_math": (2040, 50),
}


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared routing data not present")
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shared_parquets(name: str) -> None:
    shared = load_dataset(SHARED / f"{name}.parquet")
    assert (shared.n_prompts, shared.n_models) == SHAPES[name]
    assert set(shared.splits) == {"train", "test"}
    missing = np.isnan(shared.scores)
    np.testing.assert_array_equal(missing, np.isnan(shared.costs))
    if name != "zeroeval_gsm_math":
        assert not missing.any()
        return
    # Complete per task: within a task a model has every prompt or none.
    for task in set(shared.tasks):
        block = missing[shared.tasks == task]
        assert (block.all(axis=0) | ~block.any(axis=0)).all()
    assert missing.any() and not missing.all(axis=0).any()

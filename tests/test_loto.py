"""Leave-one-task-out evaluation: task families, task-grouped folds, the held-out split, and ``sae-router loto``
end to end on a tiny saved backbone and SAE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router_models.cli import main
from router_models.data import DatasetError, from_long_frame, task_folds, task_groups
from router_models.evaluate.loto import split_rows
from tests.test_train_router import sae_dir  # noqa: F401  (the tiny backbone + SAE fixture)


def test_task_groups_merge_subjects_and_drop_the_file_prefix() -> None:
    tasks = [
        "zeroeval_mmlu_redux:mmlu-redux_anatomy",
        "zeroeval_mmlu_redux:mmlu-redux_virology",
        "zeroeval_mmlu_redux:mmlu-redux_astronomy",
        "zeroeval_gsm_math:gsm8k",
        "arc_challenge",
        "zebra-grid",
    ]
    expected = ["mmlu-redux", "mmlu-redux", "mmlu-redux", "gsm8k", "arc_challenge", "zebra-grid"]
    assert list(task_groups(tasks)) == expected
    # two subjects sharing a head are not yet a family (min_shared=3): they stay apart
    assert list(task_groups(["a_x", "a_y", "b"])) == ["a_x", "a_y", "b"]


def _frame(rows: list[tuple[str, str, str, str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "task", "split", "model", "score", "cost_usd"])


def test_task_folds_give_one_fold_per_family_and_refuse_a_single_family() -> None:
    rows = [(f"p{i}", f"text {i}", ["t_a", "t_b", "t_c", "other"][i % 4], "train", "m", 1.0, 0.1) for i in range(12)]
    ds = from_long_frame(_frame(rows), "x")
    folds = task_folds(ds)
    groups = task_groups(ds.tasks)
    assert len(set(folds)) == 2  # t_a/t_b/t_c are one family, "other" the second
    for f in set(folds):
        assert len(set(groups[folds == f])) == 1
    one = from_long_frame(_frame([r for r in rows if r[2] == "other"]), "y")
    with pytest.raises(DatasetError, match="at least 2 task families"):
        task_folds(one)


def test_the_held_out_family_never_trains_and_shared_questions_are_dropped() -> None:
    rows = []
    for i in range(30):
        task = ["math", "poem", "code"][i % 3]
        text = "same question" if i in (0, 1) else f"{task} prompt {i}"  # p0 (math) and p1 (poem) share a text
        for model in ("a", "b"):
            rows.append((f"p{i}", text, task, "train" if i % 2 else "test", model, float(i % 2), 0.1))
    # model "c" ran on math only: it is not complete on poem, so it is not compared when poem is held out
    for i in range(3, 30, 3):
        rows.append((f"p{i}", f"math prompt {i}", "math", "train" if i % 2 else "test", "c", 1.0, 0.1))
    ds = from_long_frame(_frame(rows), "x")
    train, test, models = split_rows(ds, "poem")
    assert set(ds.tasks[test]) == {"poem"} and test.sum() == 10
    assert "poem" not in set(ds.tasks[train])
    assert "p0" not in set(ds.prompt_ids[train])  # same text as a held-out poem prompt
    assert models == ["a", "b"]
    with pytest.raises(ValueError, match="no task family 'haiku'"):
        split_rows(ds, "haiku")


def three_family_data(path: Path) -> Path:
    """Three families; "cheap" is good on poems and limericks only, "strong" on everything."""
    rng = np.random.default_rng(0)
    texts = {
        "math": "Compute 17 * 23 and show the steps",
        "poem": "Write a short poem about rain",
        "limerick": "Write a funny limerick about a cat",
    }
    rows = []
    for i in range(150):
        task = list(texts)[i % 3]
        good = {"cheap": task != "math" and rng.random() < 0.9, "strong": rng.random() < 0.9}
        for model, cost in (("cheap", 1e-5), ("strong", 1e-3)):
            rows.append((f"p{i:03d}", f"{texts[task]} {i}", task, "test" if i % 4 == 0 else "train", model,
                         float(good[model]), cost))  # fmt: skip
    _frame(rows).to_parquet(path)
    return path


def test_loto_command_writes_the_table_with_same_run_baselines(
    sae_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SAE_ROUTER_CACHE", str(tmp_path / "cache"))
    data = three_family_data(tmp_path / "three.parquet")
    out = tmp_path / "loto"
    args = ["loto", "--data", str(data), "--sae", str(sae_dir), "--out", str(out), "--max-tokens", "32"]
    args += ["--tasks", "poem", "--candidates", "knn", "cluster", "irt", "--n-boot", "20", "--no-progress"]
    assert main(args) == 0
    results = json.loads((out / "loto.json").read_text())
    assert list(results) == ["poem"]
    for held, r in results.items():
        assert r["n_test"] == 50 and r["n_train"] == 100  # both splits of the other two families train
        assert r["served"].startswith("sae-router (")
        assert "task-grouped" in r["selection"]["selection"]
        assert set(r["selection"]["candidates"]) >= {"knn", "cluster", "irt"}
        assert {"knn (dense)", "dense probe", "cluster (dense)", "sae probe", "sae knn"} <= set(r["baselines"])
        assert "task oracle" not in r["routers"]  # the held-out task label is never in training
        vs = r["routers"][r["served"]]["vs_best_baseline"]
        assert vs["lo"] <= vs["delta"] <= vs["hi"]
        best = r["routers"][r["best_baseline"]]["auc"]
        assert vs["delta"] == pytest.approx(r["routers"][r["served"]]["auc"] - best)
        assert held in (out / "loto.md").read_text()
    assert "| held-out task |" in capsys.readouterr().out


def test_train_refuses_bad_folds_with_a_clear_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--data", "x.parquet", "--sae", "s", "--out", str(tmp_path / "r"), "--folds", "1"]) == 2
    assert "--folds must be 'task' or a number ≥ 2" in capsys.readouterr().err


def test_an_unknown_baseline_fails_before_any_fitting() -> None:
    from router_models.evaluate.loto import leave_one_task_out

    rows = [(f"p{i}", f"text {i}", ["a", "b"][i % 2], "train", m, 1.0, 0.1) for i in range(8) for m in ("x", "y")]
    ds = from_long_frame(_frame(rows), "x")
    # the features (None) are never read: the check comes first
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['knn'\]; available: \['dense probe'"):
        leave_one_task_out(ds, None, "a", baselines=["knn"])  # type: ignore[arg-type]


def test_calibration_chosen_across_groups_scores_each_group_with_a_map_fitted_on_the_others() -> None:
    from router_models.evaluate.metrics import curve_metrics, reference_points, sweep
    from router_models.train.calibration import Calibrator

    rng = np.random.default_rng(0)
    n, models = 300, ("cheap", "strong")
    groups = np.repeat(np.array(["a", "b", "c"]), n // 3)
    scores = (rng.random((n, 2)) < np.where(groups[:, None] == "a", [0.2, 0.9], [0.7, 0.8])).astype(float)
    pred = np.clip(scores * 0.6 + rng.random((n, 2)) * 0.4, 0, 1)
    costs = np.tile([1e-5, 1e-3], (n, 1))
    method, table = Calibrator.choose(pred, scores, costs, costs, models, groups=groups)
    for m in ("identity", "platt", "isotonic"):
        aucs = []
        for g in ("a", "b", "c"):
            fit, held = groups != g, groups == g
            q = Calibrator.fit(pred[fit], scores[fit], m).apply(pred[held])
            refs = reference_points(scores[held], costs[held], models)
            aucs.append(curve_metrics(sweep(q, costs[held], scores[held], costs[held], models=models), refs)["auc"])
        assert table[m] == pytest.approx(np.mean(aucs))
    assert method == max(table, key=lambda k: table[k])


@pytest.mark.parametrize(("seed", "chosen"), [(3, "identity"), (6, "platt")])
def test_across_groups_a_map_must_not_lose_on_any_unseen_group(seed: int, chosen: str) -> None:
    """Held-out math-l5 (RESULTS §11a): Platt won the mean over three task families by 0.0014 and then lost
    0.095 AUC on the task it never saw. A map is chosen only if it routes at least as well as identity on every
    group; the cheap model's predictions here need squaring on groups a and c but not on b."""
    from router_models.train.calibration import Calibrator

    rng = np.random.default_rng(seed)
    n, models = 600, ("cheap", "mid", "strong")
    groups = np.repeat(np.array(["a", "b", "c"]), n // 3)
    pred = rng.random((n, 3)) * np.array([0.6, 0.6, 0.3]) + np.array([0.1, 0.2, 0.6])
    truth = pred.copy()
    truth[:, 0] = pred[:, 0] ** np.where(groups == "b", 1.0, 2.0)
    scores = (rng.random((n, 3)) < truth).astype(float)
    costs = np.tile([1e-5, 1e-4, 1e-3], (n, 1))
    method, table = Calibrator.choose(pred, scores, costs, costs, models, groups=groups)
    assert max(table, key=lambda k: table[k]) == "platt", table  # Platt wins the mean in both cases...
    assert method == chosen, table  # ...and is kept only where it also wins on every group (seed 6)

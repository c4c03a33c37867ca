"""The evaluation loop end to end on a small synthetic dataset whose best model depends on the prompt."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from router_models.cli import main
from router_models.data import from_long_frame
from router_models.evaluate.harness import EvalConfig, evaluate_dataset
from router_models.evaluate.report import write_report


def synthetic_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two topics: 'cheap' is right on topic A, only 'strong' on topic B. Feature = topic direction + noise."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 2, n)
    feats = np.stack([topic == 0, topic == 1], axis=1).astype(float) + rng.normal(0, 0.3, (n, 2))
    rows = []
    for i in range(n):
        split = "test" if i % 4 == 0 else "train"
        task = "A" if topic[i] == 0 else "B"
        cheap_right = float(topic[i] == 0 and rng.random() < 0.9)
        strong_right = float(rng.random() < 0.85)
        for model, score, cost in (("cheap", cheap_right, 1.0), ("strong", strong_right, 10.0)):
            rows.append((f"p{i:04d}", f"prompt {i} about {task}", task, split, model, score, cost))
    cols = ["prompt_id", "prompt", "task", "split", "model", "score", "cost_usd"]
    return pd.DataFrame(rows, columns=cols), feats


def test_routers_beat_random_mixing_and_stay_below_oracle(tmp_path) -> None:
    df, feats = synthetic_frame()
    ds = from_long_frame(df, "synthetic")
    order = np.argsort([f"p{i:04d}" for i in range(len(feats))])  # the dataset sorts prompts by id
    report = evaluate_dataset(
        ds, ["knn", "dense", "task_oracle"], EvalConfig(progress=False), features={"dense": feats[order]}
    )
    refs = report["reference"]
    assert report["n_test"] == 100
    assert refs["cheapest"]["model"] == "cheap" and refs["best_single"]["model"] == "strong"
    for name, r in report["routers"].items():
        assert r["auc"] > refs["random"]["auc"] + 0.05, name
        assert r["peak_quality"] <= refs["oracle"]["quality"] + 1e-9, name
        assert r["apgr"] > 0.6, name
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert set(data["routers"]) == {"knn", "dense", "task_oracle"}
    assert {"auc", "cost_at_95", "peak_quality", "curve"} <= set(data["routers"]["knn"])
    assert "| knn |" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 10_000


def test_cli_eval_writes_three_files(tmp_path, capsys) -> None:
    df, _ = synthetic_frame(120)
    data = tmp_path / "tiny.jsonl"
    df.to_json(data, orient="records", lines=True)
    out = tmp_path / "report"
    assert main(["eval", "--data", str(data), "--routers", "task_oracle", "--out", str(out), "--no-progress"]) == 0
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "curve.png"}
    assert "task_oracle" in capsys.readouterr().out


def test_cli_eval_bad_file_is_a_clear_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,prompt\np1,hello\n")
    assert main(["eval", "--data", str(bad), "--routers", "task_oracle", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "score" in err


def test_unknown_router_is_rejected() -> None:
    df, _ = synthetic_frame(40)
    with pytest.raises(ValueError, match="unknown router"):
        evaluate_dataset(from_long_frame(df, "x"), ["nope"], EvalConfig(progress=False))

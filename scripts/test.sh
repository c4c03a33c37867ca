#!/usr/bin/env bash
# Set up the virtualenv (scripts/setup.sh) and run the whole test suite, slow tests included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick loop.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
ruff check router_models service tests benchmarks
ruff format --check router_models service tests benchmarks
mypy
exec python -m pytest "$@"

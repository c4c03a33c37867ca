#!/usr/bin/env bash
# Set up the virtualenv (scripts/setup.sh) and run the main job.
# Today: evaluate the baseline routers on the shared dcrouter data (DATA=... to pick another file).
# Extra arguments go to `sae-router eval`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
DATA="${DATA:-$ROOT/../shared/data/routing/dcrouter.parquet}"
if [ ! -f "$DATA" ]; then
    echo "No dataset at $DATA: set DATA=/path/to/file.parquet (schema in README)." >&2
    exit 2
fi
exec sae-router eval --data "$DATA" --out "${OUT:-runs/$(basename "${DATA%.*}")}" "$@"

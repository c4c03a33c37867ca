#!/usr/bin/env bash
# Set up the virtualenv (scripts/setup.sh) and run the main job: the gateway on the bundled default router
# (artifacts/default-router) with deploy/config.default.yaml, on http://127.0.0.1:8080.
#   CONFIG=path.yaml        another gateway config (see deploy/)
#   OPENROUTER_API_KEY=...  lets chat requests reach the default config's backends (routing works without it)
# Extra arguments go to `sae-router serve` (e.g. --port 9000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec sae-router serve --config "${CONFIG:-$ROOT/deploy/config.default.yaml}" "$@"

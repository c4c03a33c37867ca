#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml and requirements/pins.txt (uv pip compile, with hashes).
#     bash scripts/lock.sh            # then run `bash scripts/test.sh` and commit requirements/
# requirements/lock.txt holds every dependency of every extra (serve, train, dev) except torch, whose build
# (CPU or CUDA) depends on the machine: requirements/torch-cpu.txt pins the CPU wheel. requirements/serve.txt
# is the subset that the core dependencies plus the `serve` extra need (the serving image installs it): the
# same resolver run for that extra alone, constrained to lock.txt's versions, so it is the same packages at the
# same versions and hashes, never a second resolution. All are resolved for CPython 3.11 on x86_64
# manylinux_2_28, the platform of CI and the images.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV="${UV:-uv}"
command -v "$UV" >/dev/null || { echo "scripts/lock.sh needs uv: pip install uv" >&2; exit 1; }
# Where a CPU build of torch comes from: the PyTorch CPU index, or a local folder of wheels (find-links).
TORCH_SOURCE=(--extra-index-url "${SAE_ROUTER_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}")
if [ -n "${SAE_ROUTER_TORCH_FIND_LINKS:-}" ]; then TORCH_SOURCE=(--find-links "$SAE_ROUTER_TORCH_FIND_LINKS"); fi
COMMON=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
        --index-strategy unsafe-best-match "${TORCH_SOURCE[@]}" -c requirements/pins.txt --quiet --no-header)
printf 'setuptools\n' > requirements/.build.in
# uv keeps the versions already in the output file unless a requirement forces a change: seed it with the current
# lock so adding one dependency does not upgrade every other (SAE_ROUTER_LOCK_UPGRADE=1 takes the newest instead).
if [ -z "${SAE_ROUTER_LOCK_UPGRADE:-}" ]; then cat requirements/torch-cpu.txt requirements/lock.txt > requirements/.all.txt; fi
"$UV" pip compile pyproject.toml requirements/.build.in --all-extras "${COMMON[@]}" -o requirements/.all.txt
# Split torch (one requirement block: the name line, its hash lines and its "# via" comments) into its own file.
split_torch() {  # split_torch IN TORCH_OUT REST_OUT
    awk -v torch="$2" -v rest="$3" '
        /^[^ #]/ { out = ($0 ~ /^torch==/) ? torch : rest }
        { print > out }' "$1"
}
split_torch requirements/.all.txt requirements/torch-cpu.txt requirements/lock.txt
# The serving subset: core + serve, every version taken from the full lock.
sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' requirements/.all.txt > requirements/.versions.txt
"$UV" pip compile pyproject.toml requirements/.build.in --extra serve "${COMMON[@]}" -c requirements/.versions.txt \
    -o requirements/.serve.txt
split_torch requirements/.serve.txt /dev/null requirements/serve.txt
rm -f requirements/.all.txt requirements/.serve.txt requirements/.versions.txt requirements/.build.in
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) packages), requirements/serve.txt" \
    "($(grep -c '==' requirements/serve.txt)) and requirements/torch-cpu.txt" >&2

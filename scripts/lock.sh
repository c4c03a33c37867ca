#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml and requirements/pins.txt (uv pip compile, with hashes).
#     bash scripts/lock.sh            # then run `bash scripts/test.sh` and commit requirements/
# requirements/lock.txt holds every dependency of every extra (serve, train, dev) except torch, whose build
# (CPU or CUDA) depends on the machine: requirements/torch-cpu.txt pins the CPU wheel. Both are resolved for
# CPython 3.11 on x86_64 manylinux_2_28, the platform of CI and the images.
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
"$UV" pip compile pyproject.toml requirements/.build.in --all-extras "${COMMON[@]}" -o requirements/.all.txt
rm -f requirements/.build.in
# Split torch (one requirement block: the name line, its hash lines and its "# via" comments) into its own file.
awk -v torch=requirements/torch-cpu.txt -v rest=requirements/lock.txt '
    /^[^ #]/ { out = ($0 ~ /^torch==/) ? torch : rest }
    { print > out }' requirements/.all.txt
rm -f requirements/.all.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) packages) and requirements/torch-cpu.txt" >&2

#!/usr/bin/env bash
# Set-up (Debian packages) and a Release build in build/. Idempotent.
#   scripts/build.sh            everything: the library, kdistill, tests and benchmarks
#   scripts/build.sh kdistill   only the targets named (what scripts/run-default.sh needs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build -j"$(nproc)" "${targets[@]}"

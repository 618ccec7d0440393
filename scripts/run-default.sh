#!/usr/bin/env bash
# Sets up, builds and runs the main job on the bundled default data (Fashion-MNIST).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh kdistill
# --force: the job may be run again; a teacher trained by an earlier run of it is reused.
build/kdistill run examples/fashion-mnist-cnn.yaml --out runs/fashion-mnist-cnn --force "$@"

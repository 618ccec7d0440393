#!/usr/bin/env bash
# Installs what kdistill needs to build, run and test, from Debian's packages.
# Idempotent: installs only what is missing, so a second run costs a second.
#   scripts/setup.sh [PACKAGE...]   also these (scripts/sanitize.sh: Clang and its runtimes)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ccache
  libtorch-dev libopenblas0-openmp libopenblas-openmp-dev libdnnl-dev
  libgloo-dev libonnx-dev libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev zlib1g-dev libzip-dev libstb-dev libboost-dev
  libsentencepiece-dev libicu-dev
  dataset-fashion-mnist
  python3-torch python3-sklearn python3-numpy python3-onnx libonnx-testdata
  python3-scipy python3-protobuf python3-sentencepiece chromium
  pybind11-dev python3-dev python3-pytest dpkg-dev
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -q
  $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Node.js runs the interop peers (TF.js, onnxruntime); Debian's nodejs/npm when none is installed.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing nodejs npm"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends nodejs npm
fi

# The npm packages of tests/node, at the versions of its package-lock.json. --ignore-scripts: the
# onnxruntime-node package ships its runtime; no install script may download anything.
node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/node"
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
   [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  echo "setup: npm ci in tests/node"
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

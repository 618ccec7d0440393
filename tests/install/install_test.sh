#!/usr/bin/env bash
# Install.AnExampleBuiltOnTheInstalledPackageDistils (tests/CMakeLists.txt):
#   install_test.sh BUILD_DIR SOURCE_DIR
# Installs the build into a fresh prefix; checks the installed program runs from there; configures
# examples/cpp against that prefix alone (find_package(kdistill)), builds it and runs a short
# distillation of examples/iris.yaml with it; builds a program with pkg-config's flags alone.
set -euo pipefail
build="$1"
source="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$work/prefix" >/dev/null
for f in bin/kdistill include/kd/kdistill.h include/kd/flow/run.h; do
  [ -e "$work/prefix/$f" ] || fail "$f was not installed"
done
[ ! -e "$work/prefix/include/kd/io/onnx_tensor.h" ] || fail "the internal onnx_tensor.h was installed"
libdir="$(dirname "$(find "$work/prefix" -name 'libkdistill.so' -print -quit)")"
[ -d "$libdir" ] || fail "libkdistill.so was not installed"
[ -e "$libdir/kdistill/libkd_sentencepiece.so" ] || fail "the SentencePiece module was not installed beside the library"
[ -e "$libdir/cmake/kdistill/kdistillConfig.cmake" ] || fail "no CMake package config in $libdir/cmake/kdistill"

# The installed program finds its library by its RPATH ($ORIGIN/../lib/...), not the build tree's.
version="$(env -u LD_LIBRARY_PATH "$work/prefix/bin/kdistill" --version)"
[[ "$version" =~ ^kdistill\ [0-9]+\.[0-9]+\.[0-9]+ ]] || fail "--version printed: $version"
libs="$(env -u LD_LIBRARY_PATH ldd "$work/prefix/bin/kdistill")"  # kept first: grep -q would end a pipe early
grep -q "libkdistill.so.* => $work/prefix/" <<<"$libs" || fail "the installed kdistill does not load $libdir/libkdistill.so"

# The Python package, from the prefix: its module finds the prefix's library by its RPATH.
pysite="$(find "$work/prefix/lib" -path '*/dist-packages/kdistill' -type d -print -quit)"
[ -n "$pysite" ] || fail "the Python package was not installed"
pyversion="$(env -u LD_LIBRARY_PATH PYTHONPATH="$(dirname "$pysite")" /usr/bin/python3 -c \
  'import kdistill, sys; print("kdistill " + kdistill.version()); print(kdistill._kdistill.__file__, file=sys.stderr)' 2>"$work/py.err")" ||
  { cat "$work/py.err"; fail "the installed Python package does not import"; }
[ "$pyversion" = "$version" ] || fail "the installed Python package says $pyversion, the program $version"
grep -q "^$pysite/" "$work/py.err" || fail "python imported kdistill from elsewhere: $(cat "$work/py.err")"

# The example project, configured against the prefix alone (the build tree is not searched).
cmake -S "$source/examples/cpp" -B "$work/example" -DCMAKE_PREFIX_PATH="$work/prefix" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_CXX_COMPILER_LAUNCHER= >"$work/configure.log"
grep -q "kdistill_DIR:PATH=$libdir/cmake/kdistill" "$work/example/CMakeCache.txt" ||
  fail "examples/cpp found kdistill elsewhere: $(grep kdistill_DIR "$work/example/CMakeCache.txt")"
cmake --build "$work/example" -j"$(nproc)" >"$work/build.log" || { cat "$work/build.log"; fail "examples/cpp did not build"; }
out="$("$work/example/distill" "$source/examples/iris.yaml" "$work/run" data.folds=0 teacher.train.epochs=10 distill.epochs=10)"
echo "$out"
grep -q '^student test: {.*"accuracy":' <<<"$out" || fail "the example printed no student accuracy"
grep -q "student probabilities on 4 rows: \[4, 3\]" <<<"$out" || fail "the example's student did not predict 3 classes for 4 rows"
[ -s "$work/run/student.kdm" ] && [ -s "$work/run/metrics.json" ] || fail "the run wrote no student.kdm and metrics.json"

# pkg-config: its flags alone build and link a program against the installed library.
cat >"$work/version.cpp" <<'CPP'
#include <kd/util/version.h>
#include <cstdio>
int main() { std::printf("%s\n", kd::build_version()); }
CPP
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
g++ -std=c++17 "$work/version.cpp" -o "$work/version" $(pkg-config --cflags --libs kdistill) -Wl,-rpath,"$libdir"
[ "kdistill $("$work/version")" = "$version" ] || fail "the pkg-config program printed $("$work/version"), expected ${version#kdistill }"
echo "install_test: installed, built and ran examples/cpp against $work/prefix"

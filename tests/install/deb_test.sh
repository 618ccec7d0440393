#!/usr/bin/env bash
# Install.TheDebianPackageInstallsAndRunsTheDefaultExample (tests/CMakeLists.txt):
#   deb_test.sh BUILD_DIR
# Builds the .deb with CPack, checks its control data (name, version, dependencies on Debian's
# libtorch and the other shared libraries), unpacks it into a fresh root (dpkg -x: no root rights, no
# container), runs the unpacked kdistill --version, and the default example (Fashion-MNIST, the
# installed examples/fashion-mnist-mlp.yaml) on a slice of the data.
set -euo pipefail
build="$(cd "$1" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "deb_test: $*" >&2; exit 1; }

(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log"; fail "cpack -G DEB failed"; }
deb="$(find "$work/out" -maxdepth 1 -name 'kdistill_*.deb' -print -quit)"
[ -n "$deb" ] || fail "cpack wrote no kdistill_*.deb: $(ls "$work/out")"
echo "deb_test: built $(basename "$deb") ($(du -h "$deb" | cut -f1))"
control="$(dpkg-deb -f "$deb" Package Version Architecture Depends)"
echo "$control"
grep -q '^Package: kdistill$' <<<"$control" || fail "the package is not named kdistill"
depends="$(dpkg-deb -f "$deb" Depends)"
for lib in libtorch1.13 libonnx1 libyaml-cpp0.7 libzip4 libgomp1 libc6; do
  grep -q "\b$lib\b" <<<"$depends" || fail "Depends lacks $lib: $depends"
done

dpkg-deb -x "$deb" "$work/root"
for f in usr/bin/kdistill usr/include/kd/kdistill.h usr/share/kdistill/examples/fashion-mnist-mlp.yaml \
         usr/lib/python3.11/dist-packages/kdistill/__init__.py; do
  [ -e "$work/root/$f" ] || fail "the package has no /$f"
done
kdistill="$work/root/usr/bin/kdistill"
version="$(env -u LD_LIBRARY_PATH "$kdistill" --version)"
[[ "$version" =~ ^kdistill\ [0-9]+\.[0-9]+\.[0-9]+ ]] || fail "--version printed: $version"
# (ldd's output is kept first: with pipefail, grep -q closing the pipe early fails the pipeline.)
libs="$(env -u LD_LIBRARY_PATH ldd "$kdistill")"
grep -q "libkdistill.so.* => $work/root/usr/" <<<"$libs" ||
  fail "the unpacked kdistill does not load the unpacked libkdistill.so: $(grep kdistill <<<"$libs")"

pyversion="$(env -u LD_LIBRARY_PATH PYTHONPATH="$(find "$work/root/usr/lib" -maxdepth 2 -name dist-packages -print -quit)" \
  /usr/bin/python3 -c 'import kdistill; print("kdistill " + kdistill.version())')" || fail "the packaged Python module does not import"
[ "$pyversion" = "$version" ] || fail "the packaged Python module says $pyversion, the program $version"

# The default example, as installed, on 2,000 training and 1,000 test images for one epoch each.
env -u LD_LIBRARY_PATH "$kdistill" --threads 2 run "$work/root/usr/share/kdistill/examples/fashion-mnist-mlp.yaml" \
  --out "$work/run" --set data.train_limit=2000 --set data.test_limit=1000 --set teacher.train.epochs=1 \
  --set distill.epochs=1 >"$work/run.log" 2>&1 || { cat "$work/run.log"; fail "the default example did not run"; }
tail -8 "$work/run.log"
[ -s "$work/run/metrics.json" ] && [ -s "$work/run/student.kdm" ] && [ -s "$work/run/report.html" ] ||
  fail "the default example wrote no metrics.json, student.kdm and report.html"
echo "deb_test: $(basename "$deb") unpacked and ran the default example"

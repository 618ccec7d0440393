#!/usr/bin/env bash
# Runs the libFuzzer harnesses (fuzz/targets.cpp) of the sanitizer build, build-asan/ (built by
# scripts/sanitize.sh, or here when it is missing).
#   scripts/fuzz.sh [SECONDS [TARGET...]]    each target SECONDS (default 20), all targets by default
#   scripts/fuzz.sh 3600                     the long run: an hour each
# Each starts from its seeds (fuzz/corpus/NAME) and the inputs earlier runs kept (build-asan/corpus/NAME,
# where new inputs go). A finding is saved as build-asan/findings/NAME-...; copy it to
# fuzz/regressions/NAME/ once fixed (the replay test runs it in every build). Prints one line a target:
# executions, executions a second, corpus size, findings. Exit status 1 on any finding.
# KD_FUZZ_SEED (default 1) seeds libFuzzer's mutations. Runs are not exactly repeatable even so (two
# runs of 20,000 executions from the same seeds kept 1,179 and 1,206 new inputs), nor is how far one
# gets in SECONDS: a finding's input is what reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
if [ ! -x build-asan/fuzz/kd_fuzz ]; then
  bash scripts/sanitize.sh configure
  cmake --build build-asan -j"$(nproc)" --target kd_fuzz
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for d in fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p build-asan/findings build-asan/logs
status=0
printf '%-12s %12s %8s %8s %s\n' target executions "exec/s" corpus findings
for t in "${targets[@]}"; do
  mkdir -p "build-asan/corpus/$t"
  log="build-asan/logs/$t.log"
  # -rss_limit_mb: a file that makes a parser allocate more than 2 GB is a finding; -timeout: one that
  # takes more than 10 s.
  if build-asan/fuzz/fuzz_"$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -seed="${KD_FUZZ_SEED:-1}" \
       -artifact_prefix="build-asan/findings/$t-" "build-asan/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    found=0
  else
    found=1
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(ls "build-asan/corpus/$t" | wc -l)
  printf '%-12s %12s %8s %8s %s\n' "$t" "${runs:-?}" "${rate:-?}" "$corpus" \
    "$([ $found = 0 ] && echo 0 || echo "1: $(ls -t build-asan/findings/"$t"-* 2>/dev/null | head -1) (log $log)")"
  # What the finding was, for a log that is all one sees (CI).
  if [ $found = 1 ]; then grep -m4 -E "not refused|ERROR|SUMMARY|Base64" "$log" | sed 's/^/    /' || true; fi
done
exit $status

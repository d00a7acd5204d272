#!/usr/bin/env bash
# Sanitizer and fuzzing stage (docs/reliability.md): builds build-fuzz/ with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer (TSUMUGI_FUZZ), runs the CPU unit tests under the
# sanitizers with leak detection on, then each fuzzer for SECONDS over its seed corpus
# (tests/fuzz/corpus/<fuzzer>), and prints a table. Exit status 1 if anything failed.
#
# Usage: tools/fuzz.sh [seconds-per-fuzzer (default 30)] [fuzzer ...]
# Environment: FUZZ_BUILD (build folder, default build-fuzz), FUZZ_JOBS (programs run side by side,
# default: the number of cores), FUZZ_TESTS=0 (skip the unit tests), FUZZ_RUNS=N (stop each
# fuzzer after N executions, or at the time limit if that comes first).
# New inputs that a run finds go to $FUZZ_BUILD/fuzz-corpus/<fuzzer> (kept between runs);
# failing inputs to $FUZZ_BUILD/fuzz-artifacts/. A failing input that is fixed belongs in
# tests/fuzz/corpus/<fuzzer>/regress-<what> as a regression seed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
build=$(realpath -m "${FUZZ_BUILD:-build-fuzz}")  # absolute: some fuzzers change directory
jobs=${FUZZ_JOBS:-$(nproc)}
# fuzz_shard_file (raw HDF5 bytes) finds libhdf5's own bugs (docs/reliability.md): run it by name.
all_fuzzers=(fuzz_safetensors fuzz_shard fuzz_manifest fuzz_documents fuzz_config fuzz_checkpoint fuzz_tokenizer)
fuzzers=("${@:-${all_fuzzers[@]}}")
[ $# -gt 0 ] || fuzzers=("${all_fuzzers[@]}")
unit_tests=(test_core test_data test_train test_tokenizer)

# Debian 12: clang-16 (clang-14 lacks C++20's capture of structured bindings), its runtime
# libraries (libFuzzer, sanitizers) and OpenMP.
for tool in clang-16 clang++-16; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool not found (tools/setup-debian.sh installs it)"; exit 1; }
done
start=$(date +%s)
CC=clang-16 CXX=clang++-16 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTSUMUGI_FUZZ=ON \
  -DTSUMUGI_CUDA=OFF -DTSUMUGI_MPI=OFF -DTSUMUGI_BUILD_TOOLS=OFF -DTSUMUGI_BUILD_EXAMPLES=OFF >/dev/null
targets=(fuzzers)
[ "${FUZZ_TESTS:-1}" = 0 ] || targets+=("${unit_tests[@]}")
cmake --build "$build" --target "${targets[@]}" -j "$(nproc)"
built=$(date +%s)

symbolizer=$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || true)
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:external_symbolizer_path=$symbolizer
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:external_symbolizer_path=$symbolizer
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
logs="$build/fuzz-logs"
mkdir -p "$logs" "$build/fuzz-artifacts"

# Runs "name command..." lines from stdin, $jobs at a time; each writes $logs/name.log and
# $logs/name.status.
run_all() {
  local pids=() name
  while read -r name cmd; do
    (set +e; bash -c "$cmd" >"$logs/$name.log" 2>&1; echo $? >"$logs/$name.status") &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  wait
}

rows=()
failed=0
if [ "${FUZZ_TESTS:-1}" != 0 ]; then
  for t in "${unit_tests[@]}"; do
    path=$(find "$build/tests" -name "$t" -type f -perm -u+x | head -1)
    echo "$t $path --gtest_brief=1"
  done | run_all
  for t in "${unit_tests[@]}"; do
    status=$(cat "$logs/$t.status")
    count=$(grep -oE '\[  PASSED  \] [0-9]+ tests?' "$logs/$t.log" | grep -oE '[0-9]+' || echo 0)
    if [ "$status" = 0 ]; then result="ok"; else result="FAILED (exit $status, $logs/$t.log)"; failed=1; fi
    rows+=("$(printf '%-18s %12s  %s' "$t" "$count tests" "$result")")
  done
fi
tested=$(date +%s)

for f in "${fuzzers[@]}"; do
  mkdir -p "$build/fuzz-corpus/$f"
  limit="-max_total_time=$seconds"
  [ -z "${FUZZ_RUNS:-}" ] || limit="$limit -runs=$FUZZ_RUNS"
  limits="-rss_limit_mb=2048 -malloc_limit_mb=2048"
  env=""
  if [ "$f" = fuzz_shard_file ]; then
    # libhdf5 (not instrumented) sizes some buffers from the file and handles a failed malloc
    # itself: there a huge malloc must fail (return null) rather than end the run. Our own code
    # allocates with new, which still reports an allocation that cannot be satisfied.
    limits="-rss_limit_mb=2048 -malloc_limit_mb=1048576"
    env="ASAN_OPTIONS=$ASAN_OPTIONS:allocator_may_return_null=1"
  fi
  echo "$f $env $build/tests/fuzz/$f $limit -timeout=10 $limits -print_final_stats=1" \
    "-artifact_prefix=$build/fuzz-artifacts/$f- $build/fuzz-corpus/$f $PWD/tests/fuzz/corpus/$f"
done | run_all
for f in "${fuzzers[@]}"; do
  status=$(cat "$logs/$f.status")
  runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$logs/$f.log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
  artifact=$(grep -oE "Test unit written to [^ ]+" "$logs/$f.log" | head -1 | sed 's/Test unit written to //' || true)
  if [ "$status" = 0 ]; then result="ok"; else result="FAILED (exit $status) ${artifact:-see $logs/$f.log}"; failed=1; fi
  rows+=("$(printf '%-18s %12s  %s' "$f" "$runs runs" "$result")")
done
done_at=$(date +%s)

echo
printf '%-18s %12s  %s\n' "program" "executions" "result"
printf '%s\n' "${rows[@]}"
echo "fuzz.sh: build $((built - start)) s, unit tests $((tested - built)) s, fuzzing $((done_at - tested)) s" \
  "($seconds s per fuzzer, $jobs at a time)"
if [ "$failed" != 0 ]; then
  echo "fuzz.sh: FAILED (logs in $logs)"
  exit 1
fi
echo "fuzz.sh: all passed"

#!/usr/bin/env bash
# The test command: installs what the build needs, builds everything, runs the test suite, then
# installs tsumugi into a scratch prefix and builds a small project against it with
# find_package(tsumugi), then runs the sanitizer and fuzz stage (tools/fuzz.sh 20).
# Usage: tools/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
test_start=$(date +%s)

tools/setup-debian.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900

# find_package(tsumugi) from an install.
prefix="$build/install-test"
rm -rf "$prefix" "$build/consumer"
cmake --install "$build" --prefix "$prefix" >/dev/null
cmake -S tests/consumer -B "$build/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$PWD/$prefix" >/dev/null
cmake --build "$build/consumer" >/dev/null
"$build/consumer/consumer"
"$build/consumer/consumer_all"

# Sanitizers and fuzzers (tools/fuzz.sh, docs/reliability.md): a clang build with ASan, UBSan
# and libFuzzer; the CPU unit tests with leak detection on; each fuzzer for 20 s over its seeds.
# Measured at 583 s from a clean build on CI's 2 cores, so it runs while the whole command stays
# within TSUMUGI_TEST_BUDGET_S (default 1560 s, 26 min, CI's limit being 30); when the suite
# before it ran long, it is skipped with a note. TSUMUGI_FUZZ_STAGE=1 forces it, 0 skips it.
fuzz_stage_s=600
elapsed=$(( $(date +%s) - test_start ))
budget=${TSUMUGI_TEST_BUDGET_S:-1560}
if [ "${TSUMUGI_FUZZ_STAGE:-auto}" = 0 ]; then
  echo "test.sh: sanitizer and fuzz stage skipped (TSUMUGI_FUZZ_STAGE=0)"
elif [ "${TSUMUGI_FUZZ_STAGE:-auto}" = 1 ] || [ $((elapsed + fuzz_stage_s)) -le "$budget" ]; then
  tools/fuzz.sh "${TSUMUGI_FUZZ_SECONDS:-20}"
else
  echo "test.sh: NOTE: sanitizer and fuzz stage skipped: the suite took ${elapsed} s and the stage" \
    "needs about ${fuzz_stage_s} s of the ${budget} s budget (run tools/fuzz.sh 20 separately)"
fi
echo "test.sh: all tests passed ($(( $(date +%s) - test_start )) s)"

#!/usr/bin/env bash
# The test command: installs what the build needs, builds everything, runs the test suite, then
# installs tsumugi into a scratch prefix and builds a small project against it with
# find_package(tsumugi). Usage: tools/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

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
echo "test.sh: all tests passed"

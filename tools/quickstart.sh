#!/usr/bin/env bash
# The main job, for now: install, build, and train the character-level Japanese model of
# examples/04_char_lm on the CPU, then sample from it. (The corpus and trainer issues extend this
# to a SentencePiece tokenizer, HDF5 shards and `tsumugi train`.)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)"
build/examples/04_char_lm

#!/usr/bin/env bash
# The main job: from a fresh clone to a trained Japanese model on the CPU.
#   1. install the Debian packages and build tsumugi
#   2. make a Japanese corpus from Debian's documentation packages (about 20 MB of text)
#   3. train an 8,000-piece SentencePiece tokenizer on it
#   4. tokenize it into HDF5 shards (train and validation splits)
#   5. train configs/ja-gpt2-tiny.toml for about ten minutes
#   6. evaluate on the validation split and generate Japanese text
# Re-running reuses what already exists (the corpus, tokenizer, shards and the trained run).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-debian.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)"
tsumugi=build/tools/tsumugi/tsumugi
data=data/ja
started=$(date +%s)
step() { printf '\n== %s (%d s so far)\n' "$1" $(( $(date +%s) - started )); }

step "corpus: Debian's Japanese documentation -> $data/debian-ja.jsonl"
"$tsumugi" corpus debian-ja --out "$data"

step "tokenizer: SentencePiece unigram, 8,000 pieces -> $data/tokenizer.model"
if [ ! -f "$data/tokenizer.model" ]; then
  "$tsumugi" tokenizer train "$data/debian-ja.jsonl" --out "$data/tokenizer" --vocab-size 8000
fi
"$tsumugi" tokenizer encode --pieces --model "$data/tokenizer.model" "日本語の文章を学習します。"

step "prep: tokens -> HDF5 shards in $data/shards"
if [ ! -f "$data/shards/train/manifest.json" ] || [ ! -f "$data/shards/val/manifest.json" ]; then
  "$tsumugi" prep "$data/debian-ja.jsonl" --tokenizer "$data/tokenizer.model" --out "$data/shards"
fi
"$tsumugi" inspect "$data/shards" | head -20

step "train: configs/ja-gpt2-tiny.toml (about ten minutes; re-running resumes or reuses the run)"
# One single-threaded rank per core (up to 4, a power of two so that they divide the batch):
# on a small CPU that is faster than one process with several threads.
ranks=1
while [ $((ranks * 2)) -le "$(nproc)" ] && [ $((ranks * 2)) -le 4 ]; do ranks=$((ranks * 2)); done
if [ "$ranks" -gt 1 ] && command -v mpirun > /dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpirun -np "$ranks" --bind-to none "$tsumugi" train configs/ja-gpt2-tiny.toml
else
  "$tsumugi" train configs/ja-gpt2-tiny.toml
fi

step "eval: the whole validation split"
"$tsumugi" eval --checkpoint runs/ja-gpt2-tiny --data "$data/shards"

step "generate"
for prompt in "日本語の" "このコマンドは" "設定ファイルを"; do
  "$tsumugi" generate --checkpoint runs/ja-gpt2-tiny --prompt "$prompt" --max-tokens 60 --seed 1
  echo
done
step "done"

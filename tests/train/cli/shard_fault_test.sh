#!/usr/bin/env bash
# Data faults: a full disk while `tsumugi prep` writes shards, and corrupted, truncated, missing
# or foreign shards met by `tsumugi train` and `tsumugi eval`. Each ends with one clear error line
# naming the file and exit 1, never a crash, and prep never leaves a split that looks complete
# but is not. Usage: shard_fault_test.sh TSUMUGI_BINARY
set -euo pipefail
tsumugi=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

# Every failure here is an error (exit 1) reported as "tsumugi: error: ...".
error_codes=1
error_prefix='tsumugi: error: '
prep() { "$tsumugi" prep "$work/corpus.jsonl" --tokenizer "$work/tok.model" --val-fraction 0.05 --threads 1 "$@"; }
train() { "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/run" "$@"; }
# A split that is not complete: no manifest.json, so that nothing reads it as data.
expect_rejected() {
  expect_error "$1: $2 rejected by inspect" "manifest.json" "$tsumugi" inspect "$2"
  expect_error "$1: $2 rejected by train" "manifest.json" train --set data.train="$2"
}

# 1. A full disk while prep writes the train shard (ulimit -f 32: writes past 32 KiB fail; the
# train shard has 74 KB, the val shard and the tokenizer 9 KB each). First into an empty folder,
# then over a complete earlier output, whose manifest must not survive to vouch for new shards.
for target in fresh over-complete; do
  out=$work/full-$target
  [ $target = over-complete ] && cp -r "$work/shards" "$out"
  expect_error "full disk during prep ($target)" "$out/train/shard-00000.h5: cannot write .*File too large" \
    bash -c "ulimit -f 32; exec $tsumugi prep $work/corpus.jsonl --tokenizer $work/tok.model --val-fraction 0.05 --threads 1 --out $out"
  leftovers=$(find "$out" -name '*.tmp' -o -name 'manifest.json' | sed "s|$work/||")
  [ -z "$leftovers" ] || { echo "FAIL: left behind: $leftovers"; exit 1; }
  [ -e "$out/train/shard-00000.h5" ] && { echo "FAIL: a partial train shard under its name"; exit 1; }
  expect_rejected "full disk ($target)" "$out/train"
  # Space again: the same command succeeds and writes the same bytes as a prep that never failed.
  prep --out "$out" > /dev/null 2>&1
  for file in train/manifest.json train/shard-00000.h5 val/manifest.json val/shard-00000.h5 tokenizer.model; do
    cmp "$work/shards/$file" "$out/$file"
  done
  "$tsumugi" inspect "$out/train" > /dev/null
  echo "ok   full disk during prep ($target): re-run with space wrote the same bytes as an undisturbed prep"
done

# 2. Broken shards met by train (train split) and eval (val split). Each case works on a copy.
"$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/run" --set train.steps=2 > /dev/null 2>&1
broken() {  # broken NAME: a fresh copy of the shards in $work/NAME
  rm -rf "${work:?}/$1"
  cp -r "$work/shards" "$work/$1"
}
# flip_bit FILE: flips one bit in the middle of the shard's token data (its offset from h5dump
# when present; else the middle of the file, which lies in the tokens of these shards).
flip_bit() {
  local file=$1 offset size
  if command -v h5dump > /dev/null; then
    read -r offset size < <(h5dump -p -H -d tokens "$file" | awk '/OFFSET/ { o = $2 } /SIZE/ { s = $2 } END { print o, s }')
    offset=$((offset + size / 2))
  else
    offset=$(($(stat -c %s "$file") / 2))
  fi
  local byte
  byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
  printf "\\x$(printf '%02x' $((byte ^ 0x10)))" | dd of="$file" bs=1 seek="$offset" conv=notrunc 2> /dev/null
}
eval_on() { "$tsumugi" eval --checkpoint "$work/run" --data "$1"; }

# expect_split_error SPLIT NAME PATTERN DIR: the damaged split DIR/SPLIT fails `train` (as its
# training split) or `eval` (the validation split) with one error line holding PATTERN.
expect_split_error() {
  if [ "$1" = train ]; then
    expect_error "$2 (train)" "$3" train --set data.train="$4/train"
  else
    expect_error "$2 (eval)" "$3" eval_on "$4/val"
  fi
}

for split in train val; do
  broken flip-$split
  file=$work/flip-$split/$split/shard-00000.h5
  flip_bit "$file"
  expect_split_error $split "bit flip in token data" "$file: checksum mismatch" "$work/flip-$split"
  if [ $split = val ]; then
    expect_error "bit flip in token data (train's validation split)" "$file: checksum mismatch" \
      train --set data.valid="$work/flip-val/val"
  fi

  broken cut-$split
  file=$work/cut-$split/$split/shard-00000.h5
  truncate -s $(($(stat -c %s "$file") / 2)) "$file"
  expect_split_error $split "truncated shard" "$file: truncated" "$work/cut-$split"

  broken gone-$split
  file=$work/gone-$split/$split/shard-00000.h5
  rm "$file"
  expect_split_error $split "missing shard" "$file: missing" "$work/gone-$split"
done

# Shards made with another tokenizer: a whole split (its manifest says so), and one shard file
# swapped into a split whose manifest matches the recipe's tokenizer.
"$tsumugi" tokenizer train "$work/corpus.jsonl" --out "$work/other" --vocab-size 450 --no-seed --threads 1 > /dev/null
"$tsumugi" prep "$work/corpus.jsonl" --tokenizer "$work/other.model" --out "$work/other-shards" --val-fraction 0.05 \
  --threads 1 > /dev/null 2>&1
expect_error "split made with another tokenizer (train)" "$work/other-shards/train/manifest.json: made with another tokenizer" \
  train --set data.train="$work/other-shards/train"
expect_error "split made with another tokenizer (eval)" "$work/other-shards/val/manifest.json: made with another tokenizer" \
  eval_on "$work/other-shards/val"
for split in train val; do
  broken swap-$split
  cp "$work/other-shards/$split/shard-00000.h5" "$work/swap-$split/$split/shard-00000.h5"
  file=$work/swap-$split/$split/shard-00000.h5
  if [ $split = train ]; then
    expect_error "shard file from another tokenizer (train)" "$file: made with another tokenizer" \
      train --set data.train="$work/swap-train/train"
  else
    expect_error "shard file from another tokenizer (eval)" "$file: made with another tokenizer" eval_on "$work/swap-val/val"
  fi
done

# The untouched shards still train and evaluate.
eval_on "$work/shards/val" > /dev/null
echo "ok   the intact shards evaluate"

#!/usr/bin/env bash
# `mpirun -np 2 tsumugi prep` writes the same shards, byte for byte, as a single process.
# Usage: prep_mpi_test.sh TSUMUGI_BINARY MPIEXEC
set -euo pipefail
tsumugi=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

RANDOM=11
words=(東京 天気 晴れ ファイル 設定 を 変更 する します の は が データ 学習 model data run token "、" "。" " ")
for d in $(seq 1 1500); do
  line=""
  for w in $(seq 1 $((5 + RANDOM % 30))); do line+=${words[$((RANDOM % ${#words[@]}))]}; done
  printf '{"text": "%s%d。"}\n' "$line" "$d"
done > "$work/corpus.jsonl"

"$tsumugi" tokenizer train "$work/corpus.jsonl" --out "$work/tok" --vocab-size 400 --no-seed > /dev/null
common=(--tokenizer "$work/tok.model" --val-fraction 0.05 --shard-tokens 5000 --block-mb 0.01 --threads 1)
"$tsumugi" prep "$work/corpus.jsonl" "${common[@]}" --out "$work/single" > /dev/null 2>&1
"$mpiexec" --oversubscribe -np 2 "$tsumugi" prep "$work/corpus.jsonl" "${common[@]}" --out "$work/mpi" > "$work/mpi.log" 2>&1 \
  || { cat "$work/mpi.log"; exit 1; }
grep -q "2 ranks" "$work/mpi.log" || { echo "prep did not run on 2 ranks:"; cat "$work/mpi.log"; exit 1; }
count=0
for file in $(cd "$work/single" && find . -type f | sort); do
  cmp "$work/single/$file" "$work/mpi/$file" || { echo "differs: $file"; exit 1; }
  count=$((count + 1))
done
[ "$count" -ge 4 ] || { echo "too few files: $count"; exit 1; }
[ "$(cd "$work/mpi" && find . -type f | wc -l)" -eq "$count" ] || { echo "extra files under mpirun"; exit 1; }
echo "prep under mpirun -np 2: $count files identical to a single process"

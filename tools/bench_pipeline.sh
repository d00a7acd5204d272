#!/usr/bin/env bash
# Pipeline benchmark: each stage's measured idle share against the ideal (P-1)/(M+P-1), the
# micro-batches each stage held at once and its peak tensor memory, for GPipe and 1F1B, on the
# quickstart data (tools/quickstart.sh makes data/ja). Prints the trainer's pipeline summary and
# the median step time of each run; writes a Chrome trace of pp = 2 with 1F1B.
#   tools/bench_pipeline.sh [TSUMUGI] [STAGES...]       (default: build/tools/tsumugi/tsumugi 2)
# Model: GPT-2, 8 blocks of width 256, seq 256, 8 micro-batches of 2 sequences per step, one
# thread per rank, so that the blocks dominate and the stages balance.
set -euo pipefail
cd "$(dirname "$0")/.."
tsumugi=${1:-build/tools/tsumugi/tsumugi}
shift || true
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(2)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_WAIT_POLICY=passive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median_step() {  # median step_seconds from the third step on
  grep -o '"step_seconds":[^,}]*' "$1/metrics.jsonl" | tail -n +3 | cut -d: -f2 | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for p in "${stages[@]}"; do
  for schedule in gpipe 1f1b; do
    run="$out/pp$p-$schedule"
    trace=()
    [ "$p" = 2 ] && [ "$schedule" = 1f1b ] && trace=(--trace "${TRACE:-pipeline-trace.json}")
    mpirun -np "$p" "$tsumugi" train configs/ja-gpt2-tiny.toml --resume never \
      --set model.layers=8 --set model.dim=256 --set model.heads=4 --set data.seq_len=256 \
      --set train.global_batch=16 --set train.micro_batch=2 --set train.steps=12 --set parallel.threads=1 \
      --set parallel.pp="$p" --set parallel.schedule="$schedule" --set eval.every=0 --set eval.sample_every=0 \
      --set checkpoint.every=0 --set checkpoint.dir="$run" --set log.every=100 "${trace[@]}" > "$run.log" 2>&1 ||
      { cat "$run.log"; exit 1; }
    printf 'pp %s %-5s median step %.3f s | %s\n' "$p" "$schedule" "$(median_step "$run")" \
      "$(grep '^pipeline: idle' "$run.log" | sed 's/^pipeline: //')"
  done
done

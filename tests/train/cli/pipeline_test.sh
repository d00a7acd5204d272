#!/usr/bin/env bash
# `mpirun -np N tsumugi train` with pipeline stages (parallel.pp) on a tiny 4-block GPT-2 with tied
# embeddings:
#  - default mode: pp = 2 (GPipe), pp = 4 (1F1B) and dp x pp = 2 x 2 give the losses of one process
#    to 1e-6 relative;
#  - deterministic mode: the same layouts (and ZeRO-1 per stage) give byte-identical
#    model.safetensors and optimizer.safetensors, and the same validation loss and samples,
#    which go through the stages (each rank holds only its stage's weights);
#  - a checkpoint written with dp x pp = 2 x 2 resumes with 1 x 4 and with 1 x 1 and ends
#    byte-identical to an uninterrupted run;
#  - --trace writes a Chrome trace with every rank's forward, backward, receive, send and
#    optimizer spans; the run reports each stage's idle share;
#  - a stage that throws or stalls ends the whole job within 60 s, naming the rank.
# Usage: pipeline_test.sh TSUMUGI_BINARY MPIEXEC
set -euo pipefail
tsumugi=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

common=(--set model.dropout=0 --set model.layers=4 --set train.steps=12 --set train.global_batch=8
        --set train.micro_batch=2 --set checkpoint.every=6)
same_losses() {  # same_losses RUN RUN: equal to 1e-6 relative, and as many
  [ "$(losses "$work/$1" | wc -l)" = "$(losses "$work/$2" | wc -l)" ] || { echo "FAIL: $1 and $2 ran different steps"; exit 1; }
  paste <(losses "$work/$1") <(losses "$work/$2") | sed 's/"loss"://g' | awk -v a="$1" -v b="$2" '
    { d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (d > 1e-6 * m) { print "FAIL: loss of", a, "and", b, "differs:", $0; bad = 1 } }
    END { exit bad }'
}
same_samples() {  # same_samples RUN RUN: the printed samples
  for run in "$1" "$2"; do
    grep -q "sample @" "$work/$run.log" || { echo "FAIL: $run printed no sample"; cat "$work/$run.log"; exit 1; }
  done
  diff <(grep "sample @" "$work/$1.log") <(grep "sample @" "$work/$2.log")
}
same_eval_and_samples() {  # same_eval_and_samples RUN RUN: validation records (same dp) and samples
  for run in "$1" "$2"; do
    grep -q '"val_loss"' "$work/$run/metrics.jsonl" || { echo "FAIL: $run has no evaluation"; exit 1; }
  done
  diff <(grep -o '"val_[a-z]*":[^,}]*' "$work/$1/metrics.jsonl") <(grep -o '"val_[a-z]*":[^,}]*' "$work/$2/metrics.jsonl")
  same_samples "$1" "$2"
}
same_bytes() {  # same_bytes RUN RUN: the newest checkpoints' weights and optimizer state
  cmp "$work/$1/checkpoints/latest/model.safetensors" "$work/$2/checkpoints/latest/model.safetensors"
  cmp "$work/$1/checkpoints/latest/optimizer.safetensors" "$work/$2/checkpoints/latest/optimizer.safetensors"
}

# Default mode.
mpi_train 1 one
for layout in "2 gpipe" "4 1f1b"; do
  set -- $layout
  mpi_train "$1" "pp$1-$2" --set parallel.pp="$1" --set parallel.schedule="$2"
  same_losses one "pp$1-$2"
done
mpi_train 4 dp2pp2 --set parallel.pp=2
same_losses one dp2pp2
grep -q "pipeline: 2 stages x 2 data-parallel replicas" "$work/dp2pp2.log" || { cat "$work/dp2pp2.log"; exit 1; }
grep -q "pipeline: weights held per stage .* M of .* M" "$work/dp2pp2.log" || { cat "$work/dp2pp2.log"; exit 1; }
grep -q "pipeline: idle per stage" "$work/pp4-1f1b.log" || { cat "$work/pp4-1f1b.log"; exit 1; }
echo "ok   default mode: pp 2 (GPipe), pp 4 (1F1B) and dp 2 x pp 2 give the losses of one process to 1e-6"

# Deterministic mode: the same bytes as one process.
det=(--set parallel.deterministic=true --set eval.sample_every=6)
mpi_train 1 det1 "${det[@]}"
for layout in "2 gpipe" "2 1f1b" "4 gpipe" "4 1f1b"; do
  set -- $layout
  mpi_train "$1" "det-pp$1-$2" "${det[@]}" --set parallel.pp="$1" --set parallel.schedule="$2"
  same_bytes det1 "det-pp$1-$2"
  diff <(losses "$work/det1") <(losses "$work/det-pp$1-$2")
  same_eval_and_samples det1 "det-pp$1-$2"
done
mpi_train 4 det-dp2pp2 "${det[@]}" --set parallel.pp=2
same_bytes det1 det-dp2pp2
same_samples det1 det-dp2pp2  # (each replica evaluates eval.batches of its own share: more tokens)
mpi_train 4 det-dp2pp2-zero "${det[@]}" --set parallel.pp=2 --set parallel.zero=1
same_bytes det1 det-dp2pp2-zero
echo "ok   deterministic mode: pp 2 and 4, GPipe and 1F1B, dp 2 x pp 2 (also with ZeRO-1) are byte-identical to one process;"
echo "     evaluation and samples through the stages are the same as one process's"

# A 2 x 2 checkpoint (step 6; the run is killed at step 7) resumes as 1 x 4 and as 1 x 1.
for target in "4 4" "1 1"; do
  set -- $target
  name=resume-np$1
  TSUMUGI_INJECT_FAULT=kill@7 mpi_train 4 "$name" "${det[@]}" --set parallel.pp=2 > /dev/null 2>&1 || true
  [ "$(readlink "$work/$name/checkpoints/latest")" = "step-00000006" ] || { echo "FAIL: no step-6 checkpoint"; exit 1; }
  mpi_train "$1" "$name" "${det[@]}" --set parallel.pp="$2"
  grep -q "resuming from .*step-00000006" "$work/$name.log" || { echo "FAIL: no resume"; cat "$work/$name.log"; exit 1; }
  same_bytes det1 "$name"
  diff <(losses "$work/det1") <(losses "$work/$name")
done
echo "ok   a dp 2 x pp 2 checkpoint resumed as 1 x 4 and 1 x 1: same losses, byte-identical weights and state"

# The trace: every rank's spans, readable JSON.
mpi_train 2 traced --set parallel.pp=2 --set train.steps=4 --trace "$work/trace.json" --set log.trace_steps=4
check_trace "$work/trace.json"
# tools/trace_bubble.py replays the traced schedule: for each stage a measured, a replayed and a
# steady idle share, all between 0 and 100%; the ideal for 2 stages of 4 micro-batches is 20%.
python3 "$(dirname "$0")/../../../tools/trace_bubble.py" "$work/trace.json" > "$work/bubble.txt" ||
  { cat "$work/bubble.txt"; exit 1; }
awk '$1 ~ /^[01]$/ { for (i = 2; i <= 4; ++i) { v = $i + 0; if (v <= 0 || v >= 100) bad = 1 } if ($5 != "20.0%") bad = 1; n++ }
     END { exit (n == 2 && !bad) ? 0 : 1 }' "$work/bubble.txt" || { echo "FAIL: trace_bubble.py"; cat "$work/bubble.txt"; exit 1; }
echo "ok   trace_bubble.py: $(grep -c '%' "$work/bubble.txt") stages"

# A stage that throws, or stalls, ends the whole pipeline job quickly, naming the rank.
args=("${common[@]}" --set parallel.pp=2 --set checkpoint.dir="$work/fault")
fault_ends_job "throw@3:1" 'rank 1: error: \[fault\] injected error at step 3' "${args[@]}"
fault_ends_job "stall@3:1" 'rank [01]: collective .* did not complete' "${args[@]}"

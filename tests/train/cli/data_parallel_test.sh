#!/usr/bin/env bash
# `mpirun -np N tsumugi train` on a tiny corpus:
#  - default mode: 2 ranks give the same losses as 1 rank on the same global batch (1e-6 relative);
#  - deterministic mode: 1, 2 and 4 ranks give byte-identical model.safetensors;
#  - a checkpoint written by 2 ranks resumes on 1 and on 4 ranks and ends byte-identical to an
#    uninterrupted run (deterministic mode);
#  - a rank that throws, is killed or stalls ends the whole job, non-zero, within 60 s.
# Usage: data_parallel_test.sh TSUMUGI_BINARY MPIEXEC
set -euo pipefail
tsumugi=$1
mpiexec=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

common=(--set model.dropout=0 --set train.steps=12 --set train.global_batch=8 --set checkpoint.every=6)

# Default mode: losses of 1 and 2 ranks agree to 1e-6 relative.
mpi_train 1 one --set train.micro_batch=4
mpi_train 2 two --set train.micro_batch=4
paste <(losses "$work/one") <(losses "$work/two") | sed 's/"loss"://g' | awk '
  { d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (d > 1e-6 * m) { print "loss differs:", $0; bad = 1 } }
  END { exit bad }'
echo "ok   default mode: $(losses "$work/one" | wc -l) losses of 1 and 2 ranks agree to 1e-6"

# Deterministic mode: identical bytes for 1, 2 and 4 ranks (micro-batches of 2 sequences).
det=(--set parallel.deterministic=true --set train.micro_batch=2)
for np in 1 2 4; do mpi_train $np det$np "${det[@]}"; done
for np in 2 4; do
  cmp "$work/det1/checkpoints/latest/model.safetensors" "$work/det$np/checkpoints/latest/model.safetensors"
done
diff <(losses "$work/det1") <(losses "$work/det4")
echo "ok   deterministic mode: 1, 2 and 4 ranks give byte-identical weights and identical losses"

# ZeRO-1: the same bytes as plain data parallelism in deterministic mode, the same losses in the
# default mode; its checkpoint (gathered into AdamW's format) resumes without ZeRO on 1 rank.
for np in 2 4; do
  mpi_train $np zero$np "${det[@]}" --set parallel.zero=1
  cmp "$work/det1/checkpoints/latest/model.safetensors" "$work/zero$np/checkpoints/latest/model.safetensors"
  cmp "$work/det$np/checkpoints/latest/optimizer.safetensors" "$work/zero$np/checkpoints/latest/optimizer.safetensors"
done
mpi_train 2 zero-default --set train.micro_batch=4 --set parallel.zero=1
paste <(losses "$work/two") <(losses "$work/zero-default") | sed 's/"loss"://g' | awk '
  { d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (d > 1e-6 * m) { print "loss differs:", $0; bad = 1 } }
  END { exit bad }'
echo "ok   ZeRO-1: byte-identical to data parallelism (deterministic, 2 and 4 ranks); same losses (default mode)"

# A checkpoint of 2 ranks (step 6) resumes on 1 and on 4 ranks. The 2-rank run is killed at
# step 7 (the recipe stays the same, so does the learning-rate schedule).
for np in 1 4; do
  TSUMUGI_INJECT_FAULT=kill@7 mpi_train 2 resume$np "${det[@]}" > /dev/null 2>&1 || true
  [ "$(readlink "$work/resume$np/checkpoints/latest")" = "step-00000006" ] || { echo "FAIL: no step-6 checkpoint"; exit 1; }
  mpi_train $np resume$np "${det[@]}"
  grep -q "resuming from .*step-00000006" "$work/resume$np.log" || { echo "FAIL: no resume on $np ranks"; exit 1; }
  cmp "$work/det1/checkpoints/latest/model.safetensors" "$work/resume$np/checkpoints/latest/model.safetensors"
  diff <(losses "$work/det1") <(losses "$work/resume$np")
done
echo "ok   a 2-rank checkpoint resumed on 1 and on 4 ranks: same losses, byte-identical weights"

# Failures on one rank end the whole job quickly.
args=("${common[@]}" --set checkpoint.dir="$work/fault" --set train.micro_batch=4)
fault_ends_job "throw@3:1" 'rank 1: error: \[fault\] injected error at step 3' "${args[@]}"
fault_ends_job "kill@3:1" '[Rr]ank 1|[Ss]ignal 9|[Kk]illed|KILLED' "${args[@]}"
fault_ends_job "stall@3:1" 'collective .* did not complete' "${args[@]}"

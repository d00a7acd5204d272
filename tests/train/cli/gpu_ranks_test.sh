#!/usr/bin/env bash
# Several ranks on one GPU, through host memory over MPI (docs/distributed.md), in deterministic
# mode, each run against one process on the same GPU (same losses, byte-identical weights and
# optimizer state):
#  - pipeline stages: `mpirun -np 2` with parallel.pp = 2 puts both stages on the one GPU
#    (device = local rank modulo the GPUs); GPipe and 1F1B in f32, 1F1B in bf16 (fp32 master
#    weights in each stage's optimizer);
#  - data parallelism with parallel.gpu_comm = "mpi" (NCCL would need a GPU per rank): dp 2, and
#    dp 2 with ZeRO-1 (the optimizer shards on the GPU) in f32 and bf16;
#  - the trace holds both ranks' spans and the run reports each stage's idle share.
# Usage: gpu_ranks_test.sh TSUMUGI_BINARY MPIEXEC [DEVICE]
# DEVICE is cuda (the default: exits 77, skipped, without a GPU) or cpu (the same checks on the
# CPU, f32 only: tools/gpu/selftest-open-mpi.sh runs them so through the GPU bundle's own mpirun).
set -euo pipefail
tsumugi=$1
mpiexec=$2
device=${3:-cuda}
source "$(dirname "$0")/fixture.sh"
[[ $device == cpu ]] || skip_without_gpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make_fixture

common=(--set device.type="$device" --set model.dropout=0 --set model.layers=4 --set train.steps=8
        --set train.global_batch=8 --set train.micro_batch=2 --set checkpoint.every=4
        --set parallel.deterministic=true)
same_run() {  # same_run RUN RUN: the same losses and the newest checkpoints' bytes
  diff <(losses "$work/$1") <(losses "$work/$2") || { echo "FAIL: $1 and $2 have different losses"; exit 1; }
  [ "$(losses "$work/$1" | wc -l)" = 8 ] || { echo "FAIL: $1 did not run 8 steps"; exit 1; }
  for file in model.safetensors optimizer.safetensors; do
    cmp "$work/$1/checkpoints/latest/$file" "$work/$2/checkpoints/latest/$file" ||
      { echo "FAIL: $1 and $2 end with different $file"; exit 1; }
  done
}

dtypes=(f32 bf16)
[[ $device == cuda ]] || dtypes=(f32)  # bf16 and f16 compute are CUDA's
for dtype in "${dtypes[@]}"; do
  mpi_train 1 "one-$dtype" --set precision.compute=$dtype
  for schedule in gpipe 1f1b; do
    [[ $dtype == bf16 && $schedule == gpipe ]] && continue
    mpi_train 2 "pp2-$schedule-$dtype" --set precision.compute=$dtype --set parallel.pp=2 \
      --set parallel.schedule=$schedule
    grep -q "pipeline: 2 stages" "$work/pp2-$schedule-$dtype.log" || { cat "$work/pp2-$schedule-$dtype.log"; exit 1; }
    same_run "one-$dtype" "pp2-$schedule-$dtype"
    echo "ok   $device $dtype, pp 2 ($schedule) on one device: the losses and bytes of one process"
  done
  for zero in 0 1; do
    [[ $dtype == bf16 && $zero == 0 ]] && continue
    mpi_train 2 "dp2-zero$zero-$dtype" --set precision.compute=$dtype --set parallel.gpu_comm=mpi \
      --set parallel.zero=$zero
    same_run "one-$dtype" "dp2-zero$zero-$dtype"
    echo "ok   $device $dtype, dp 2$( ((zero)) && echo " with ZeRO-1") on one device: the losses and bytes of one process"
  done
done

mpi_train 2 traced --set parallel.pp=2 --set parallel.schedule=1f1b --trace "$work/trace.json"
grep "pipeline: idle per stage" "$work/traced.log" || { echo "FAIL: no idle shares"; cat "$work/traced.log"; exit 1; }
check_trace "$work/trace.json"

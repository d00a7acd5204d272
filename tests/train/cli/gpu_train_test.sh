#!/usr/bin/env bash
# Training on a GPU through the tool: the tiny recipe on cuda in f32 follows the CPU's loss curve,
# in bf16 it learns as well within bf16 tolerance, and a bf16 run killed and resumed ends with
# exactly the weights of an uninterrupted run (the fp32 master weights are in the checkpoint).
# Exits 77 (skipped) without a GPU. Usage: gpu_train_test.sh TSUMUGI_BINARY
set -euo pipefail
tsumugi=$1
source "$(dirname "$0")/fixture.sh"
skip_without_gpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make_fixture

train() {  # train NAME [--set ...]
  local name=$1
  shift
  "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/$name" "$@" > "$work/$name.log" 2>&1 \
    || { echo "run $name failed:"; cat "$work/$name.log"; exit 1; }
}
train cpu
train f32 --set device.type=cuda
train bf16 --set device.type=cuda --set precision.compute=bf16

# The same seed gives the same start, the same batches and the same dropout masks on every device:
# the curves differ only by rounding.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def losses(name):
    return [r["loss"] for r in map(json.loads, open(f"{work}/{name}/metrics.jsonl")) if "step_seconds" in r]
cpu, f32, bf16 = losses("cpu"), losses("f32"), losses("bf16")
assert len(cpu) == len(f32) == len(bf16) == 40, (len(cpu), len(f32), len(bf16))
worst_f32 = max(abs(a - b) / a for a, b in zip(cpu, f32))
worst_bf16 = max(abs(a - b) / a for a, b in zip(cpu, bf16))
print(f"loss curves over 40 steps: cuda f32 within {worst_f32:.2e}, cuda bf16 within {worst_bf16:.2e} of the cpu")
assert worst_f32 < 1e-3, "cuda f32 left the cpu curve"
assert worst_bf16 < 3e-2, "cuda bf16 left the cpu curve"
assert bf16[-1] < bf16[0] - 1.0, "bf16 did not learn"
PY

# Exact resume in bf16: kill -9 mid-run, resume from the last checkpoint, compare with the straight run.
"$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/resumed" --set device.type=cuda \
  --set precision.compute=bf16 > "$work/resumed.log" 2>&1 &
pid=$!
while [ "$(steps_done "$work/resumed")" -lt 17 ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
echo "killed the bf16 run at step $(steps_done "$work/resumed")"
train resumed --set device.type=cuda --set precision.compute=bf16
grep -q "resuming from" "$work/resumed.log" || { echo "did not resume"; cat "$work/resumed.log"; exit 1; }
cmp "$work/bf16/checkpoints/latest/model.safetensors" "$work/resumed/checkpoints/latest/model.safetensors"
cmp "$work/bf16/checkpoints/latest/optimizer.safetensors" "$work/resumed/checkpoints/latest/optimizer.safetensors"
echo "bf16 on cuda: killed and resumed to byte-identical fp32 weights and optimizer state"

# A GPU checkpoint is an ordinary checkpoint: evaluation and generation on the CPU read it.
"$tsumugi" eval --checkpoint "$work/bf16/checkpoints/latest" --data "$work/shards/val" > "$work/eval.log" 2>&1 \
  || { cat "$work/eval.log"; exit 1; }
grep -q "bits per byte" "$work/eval.log" || { cat "$work/eval.log"; exit 1; }
echo "eval on the cpu of a bf16 cuda checkpoint: $(grep 'bits per byte' "$work/eval.log")"

# The same checkpoint evaluated on the GPU gives the CPU's bits per byte, and greedy generation
# on the GPU gives the CPU's tokens.
"$tsumugi" eval --checkpoint "$work/f32/checkpoints/latest" --data "$work/shards/val" > "$work/eval_cpu.log"
"$tsumugi" eval --checkpoint "$work/f32/checkpoints/latest" --data "$work/shards/val" --device cuda > "$work/eval_gpu.log"
python3 - "$work" <<'PY'
import re, sys
work = sys.argv[1]
bpb = [float(re.search(r"bits_per_byte=([0-9.]+)", open(f"{work}/eval_{d}.log").read()).group(1)) for d in ("cpu", "gpu")]
print(f"eval bits per byte: cpu {bpb[0]:.6f}, cuda {bpb[1]:.6f}")
assert abs(bpb[0] - bpb[1]) < 1e-4 * bpb[0]
PY
for device in cpu cuda; do
  "$tsumugi" generate --checkpoint "$work/f32/checkpoints/latest" --prompt "東京の天気" --temperature 0 \
    --max-tokens 24 --ignore-eos --show-ids --device $device | grep generated_ids > "$work/gen_$device.txt"
done
diff "$work/gen_cpu.txt" "$work/gen_cuda.txt"
echo "greedy generation: the same 24 tokens on cpu and cuda"

#!/usr/bin/env bash
# tsumugi and PyTorch train the same models on the same CPU: `tsumugi bench train --device cpu`
# against tools/bench_torch.py --device cpu (fp32, the same shapes, step, optimizer and FLOP
# count), one after the other in each of ROUNDS rounds, so that both see the same machine.
# Prints every run, then per model the median tokens/s of each side and the ratio of the
# medians (and the ratio within each round, which noise between rounds does not move).
#
#   tools/bench_cpu_vs_torch.sh build/tools/tsumugi/tsumugi [ROUNDS]
#
# Environment: PYTHON (a python3 with torch; default /usr/bin/python3, where Debian's
# python3-torch lives), THREADS (both sides; default: every core), MODELS (comma-separated
# among gpt2-small, llama-small, gpt2-124m; default all three).
set -euo pipefail
tsumugi=${1:?usage: tools/bench_cpu_vs_torch.sh TSUMUGI [ROUNDS]}
rounds=${2:-3}
python=${PYTHON:-/usr/bin/python3}
threads=${THREADS:-$(nproc)}
models=${MODELS:-gpt2-small,llama-small,gpt2-124m}
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp /tmp/bench-cpu-vs-torch.XXXXXX)
"$python" -c 'import torch' 2> /dev/null ||
  { echo "bench_cpu_vs_torch: $python has no torch (apt-get install python3-torch)" >&2; exit 2; }

# The shapes, as tsumugi flags; bench_torch.py has the same models as presets of the same name.
tsumugi_flags() {
  case $1 in
    gpt2-small) echo "--arch gpt2 --layers 4 --heads 4 --dim 256 --vocab 8192 --seq 256 --batch 8 --steps 10 --warmup 2" ;;
    llama-small) echo "--arch llama --layers 4 --heads 4 --kv-heads 2 --dim 256 --vocab 8192 --seq 256 --batch 8 --steps 10 --warmup 2" ;;
    gpt2-124m) echo "--preset gpt2-124m --batch 4 --seq 512 --steps 5 --warmup 2" ;;
    *) echo "bench_cpu_vs_torch: unknown model $1" >&2; exit 2 ;;
  esac
}
torch_flags() {
  case $1 in
    gpt2-124m) echo "--models gpt2-124m --batch 4 --seq 512 --steps 5 --warmup 2" ;;
    *) echo "--models $1 --steps 10 --warmup 2" ;;
  esac
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); threads $threads"
echo "torch: $("$python" -c 'import torch; print(torch.__version__)')"
for round in $(seq 1 "$rounds"); do
  for model in ${models//,/ }; do
    # shellcheck disable=SC2046  # the flags are words
    line=$("$tsumugi" bench train $(tsumugi_flags "$model") --threads "$threads" | grep '^RESULT ' | tail -1)
    echo "round $round $model tsumugi ${line#RESULT }" | tee -a "$log"
    # shellcheck disable=SC2046
    line=$("$python" "$here/bench_torch.py" --device cpu --modes eager --threads "$threads" $(torch_flags "$model") |
      grep '^RESULT .*"train"' | tail -1)
    echo "round $round $model torch ${line#RESULT }" | tee -a "$log"
  done
done

"$python" - "$log" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    _, rnd, model, impl, payload = line.split(" ", 4)
    r = json.loads(payload)
    if "error" in r:
        print(f"{model} {impl} round {rnd}: {r['error']}")
        continue
    runs.setdefault(model, {}).setdefault(impl, {})[int(rnd)] = r
print()
print(f"{'model':12} {'tsumugi tok/s':>14} {'torch tok/s':>12} {'ratio':>6}  {'per-round ratios':18} "
      f"{'MFU tsumugi/torch':>17} {'peak RSS MB':>14}")
for model, impls in runs.items():
    t, p = impls.get("tsumugi", {}), impls.get("torch", {})
    if not t or not p:
        continue
    mt = statistics.median(r["tokens_per_s"] for r in t.values())
    mp = statistics.median(r["tokens_per_s"] for r in p.values())
    per_round = " ".join(f"{t[k]['tokens_per_s'] / p[k]['tokens_per_s']:.2f}" for k in sorted(t) if k in p)
    mfu = f"{statistics.median(r['mfu'] for r in t.values()):.2f}/{statistics.median(r['mfu'] for r in p.values()):.2f}"
    rss = f"{max(r['peak_rss_mb'] for r in t.values()):.0f}/{max(r.get('peak_rss_mb', 0) for r in p.values()):.0f}"
    print(f"{model:12} {mt:14.1f} {mp:12.1f} {mt / mp:6.2f}  {per_round:18} {mfu:>17} {rss:>14}")
PY
rm -f "$log"

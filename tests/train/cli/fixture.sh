# Sourced by the trainer's command-line tests: a small Japanese corpus, a 500-piece tokenizer
# and its shards in "$work", and a tiny recipe "$work/tiny.toml". Needs $tsumugi and $work.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_WAIT_POLICY=passive

make_fixture() {
  # The same corpus every time: RANDOM is seeded here and only read in this shell (bash 5.1
  # reseeds it in every subshell, so a $(...) that reads it gives a different corpus each run).
  RANDOM=7
  local words=(東京 大阪 天気 晴れ 雨 ファイル 設定 を 変更 する します の は が で データ 学習 モデル 日本語 文章 model data run token "、" "。" " ")
  local d w n line
  for ((d = 1; d <= 1200; d++)); do
    line=""
    n=$((8 + RANDOM % 40))
    for ((w = 0; w < n; w++)); do line+=${words[$((RANDOM % ${#words[@]}))]}; done
    printf '{"text": "%s%d。"}\n' "$line" "$d"
  done > "$work/corpus.jsonl"
  "$tsumugi" tokenizer train "$work/corpus.jsonl" --out "$work/tok" --vocab-size 500 --no-seed --threads 1 > /dev/null
  "$tsumugi" prep "$work/corpus.jsonl" --tokenizer "$work/tok.model" --out "$work/shards" --val-fraction 0.05 \
    --threads 1 > /dev/null 2>&1
  cat > "$work/tiny.toml" <<TOML
[model]
arch = "gpt2"
layers = 2
heads = 2
dim = 64
context = 64
dropout = 0.1
[data]
train = "$work/shards/train"
valid = "$work/shards/val"
tokenizer = "$work/shards/tokenizer.model"
seq_len = 64
[train]
steps = 40
global_batch = 8
micro_batch = 4
lr = 3e-3
min_lr = 3e-4
warmup_steps = 4
[parallel]
threads = 1
[checkpoint]
dir = "$work/run"
every = 5
keep = 2
[eval]
every = 0
batches = 2
sample_every = 0
[log]
every = 1
TOML
}

# The training losses of a run, one per line (evaluation records left out).
losses() { grep -o '"loss":[^,}]*' "$1/metrics.jsonl"; }

# Number of finished steps in a run's metrics.
steps_done() {
  local n
  n=$(grep -c '"step_seconds"' "$1/metrics.jsonl" 2>/dev/null) || true
  echo "${n:-0}"
}

# Starts a 2-rank `tsumugi train` of the tiny recipe (extra arguments appended) with the injected
# fault FAULT and a 10 s collective timeout, and checks that the whole job ends within 60 s,
# non-zero, with a log line matching the extended regular expression PATTERN. Needs $mpiexec.
fault_ends_job() {  # fault_ends_job FAULT PATTERN [train arguments...]
  local fault=$1 pattern=$2 start code seconds
  shift 2
  start=$(date +%s)
  set +e
  TSUMUGI_INJECT_FAULT=$fault TSUMUGI_COLLECTIVE_TIMEOUT=10 timeout 90 "$mpiexec" --oversubscribe -np 2 \
    -x TSUMUGI_INJECT_FAULT -x TSUMUGI_COLLECTIVE_TIMEOUT "$tsumugi" train "$work/tiny.toml" "$@" > "$work/fault.log" 2>&1
  code=$?
  set -e
  seconds=$(( $(date +%s) - start ))
  if [ $code -eq 0 ] || [ $code -eq 124 ] || [ $seconds -gt 60 ]; then
    echo "FAIL $fault: exit $code after $seconds s"; cat "$work/fault.log"; exit 1
  fi
  grep -qE "$pattern" "$work/fault.log" || { echo "FAIL $fault: no line matches '$pattern'"; cat "$work/fault.log"; exit 1; }
  echo "ok   $fault: job ended in $seconds s with exit $code"
}

# expect_error NAME PATTERN COMMAND...: the command exits with a code in $error_codes (default
# "1 2": an error, or a usage error), does not crash, and prints exactly one line on stderr (prep's
# progress lines, "prep: ..%", aside) that holds PATTERN and, when $error_prefix is set, begins
# with it.
expect_error() {
  local name=$1 pattern=$2 code
  shift 2
  set +e
  "$@" > "$work/out.log" 2> "$work/err.log"
  code=$?
  set -e
  grep -v '^prep: ' "$work/err.log" > "$work/err-lines.log" || true
  if ! [[ " ${error_codes:-1 2} " == *" $code "* ]]; then
    echo "FAIL $name: exit code $code (want ${error_codes:-1 2})"; cat "$work/err.log"; exit 1
  fi
  if ! grep -q -- "$pattern" "$work/err-lines.log"; then
    echo "FAIL $name: stderr lacks '$pattern':"; cat "$work/err.log"; exit 1
  fi
  if [ "$(grep -c . "$work/err-lines.log")" -ne 1 ] || ! grep -q -- "^${error_prefix:-}" "$work/err-lines.log"; then
    echo "FAIL $name: expected one error line on stderr${error_prefix:+ beginning with '$error_prefix'}:"
    cat "$work/err.log"; exit 1
  fi
  echo "ok   $name: $(cat "$work/err-lines.log")"
}

# mpi_train NP RUN_NAME [train arguments...]: `mpirun -np NP tsumugi train` of the tiny recipe with
# the script's "${common[@]}" settings, into "$work/RUN_NAME" (log "$work/RUN_NAME.log", shown if
# the job fails). TSUMUGI_INJECT_FAULT passes through. Needs $mpiexec.
mpi_train() {
  local np=$1 name=$2
  shift 2
  "$mpiexec" --oversubscribe -np "$np" -x TSUMUGI_INJECT_FAULT "$tsumugi" train "$work/tiny.toml" "${common[@]}" \
    --set checkpoint.dir="$work/$name" "$@" > "$work/$name.log" 2>&1 || { cat "$work/$name.log"; return 1; }
}

# check_trace FILE: a Chrome trace of a 2-stage run, readable JSON in which both ranks have
# forward, backward, receive, send and optimizer spans and stage 1 is named.
check_trace() {
  python3 - "$1" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
spans = [e for e in events if e.get("ph") == "X"]
for rank in (0, 1):
    cats = {e["cat"] for e in spans if e["pid"] == rank}
    missing = {"forward", "backward", "recv", "send", "optimizer"} - cats
    assert not missing, f"rank {rank} lacks {missing}"
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
names = [e["args"]["name"] for e in events if e.get("name") == "process_name"]
assert any("stage 1" in n for n in names), names
print(f"ok   trace: {len(spans)} spans from 2 ranks")
PY
}

# skip_without_gpu: exits 77 (CTest's "skipped") unless $tsumugi sees a CUDA device.
skip_without_gpu() {
  if ! "$tsumugi" --version | grep -q "cuda: built, [1-9]"; then
    echo "no CUDA device: skipped"
    exit 77
  fi
}

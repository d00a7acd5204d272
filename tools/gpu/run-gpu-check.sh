#!/usr/bin/env bash
# The GPU check. Runs ON the GPU machine, from inside the folder that tools/gpu/build-bundle.sh
# made (where this file is run.sh); docs/gpu.md tells the whole procedure.
#
#   bash gpu-bundle/run.sh [STAGE...]
#
# STAGE: all (the default: tests, train, bench, then ranks), tests (test_cuda: every CUDA op
# against the CPU), train (tests/train/cli/gpu_train_test.sh: a tiny model's loss curves on cuda
# against the CPU, exact bf16 resume, eval and generation), ranks
# (tests/train/cli/gpu_ranks_test.sh through the bundle's own mpirun: two pipeline stages, and
# two data-parallel ranks with and without ZeRO-1, on the one GPU give one process's bytes),
# bench (tsumugi, then torch), tsumugi (`tsumugi bench gemm` and `bench train` of GPT-2 124M and
# Llama 1B in bf16), torch (tools/bench_torch.py,
# eager and torch.compile), core (test_core, the CPU tests; not part of all), env (the
# environment report only; every run starts with it).
#
# Each stage runs under its own timeout and under a deadline for the whole run, so the run ends
# within TSU_GPU_BUDGET_S (460 s) even if something hangs; a stage that fails does not stop the
# next. test_cuda runs one process per test suite, so that a crash (an illegal address poisons
# the CUDA context) costs one suite, not the rest. The summary table is printed last.
#
# Logs go to $OUT when it is set (the folder the device tool brings back), else to
# <bundle>/results: env.txt, test_cuda.log, test_cuda.xml (JUnit), train.log, ranks.log, bench.log,
# core.log, summary.txt.
#
# Environment: OUT; TSU_GPU_BUDGET_S (460); TSU_GPU_WORK (/tmp/tsumugi-gpu: the expanded
# binaries); PYTHON (/opt/torch/.venv/bin/python3 when it exists, else python3);
# TSU_GTEST_FILTER (a --gtest_filter for test_cuda); TSU_BENCH_STEPS (10 timed steps);
# TSU_NVIDIA_LIB_DIRS (colon-separated; instead of searching the Python environment);
# limits in seconds: TSU_T_TESTS (180, all suites), TSU_T_SUITE (90, one suite), TSU_T_TRAIN (120),
# TSU_T_RANKS (90), TSU_T_GEMM (60),
# TSU_T_GPT2 (75), TSU_T_LLAMA (100), TSU_T_TORCH_GPT2 (130), TSU_T_TORCH_LLAMA (130),
# TSU_T_CORE (300).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results=${OUT:-$here/results}
work=${TSU_GPU_WORK:-/tmp/tsumugi-gpu}
started=$SECONDS
deadline=$((SECONDS + ${TSU_GPU_BUDGET_S:-460}))
steps=${TSU_BENCH_STEPS:-10}

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }
do_tests=0 do_train=0 do_ranks=0 do_tsumugi=0 do_torch=0 do_core=0
(($#)) || set -- all
for stage in "$@"; do
  case $stage in
    all) do_tests=1 do_train=1 do_ranks=1 do_tsumugi=1 do_torch=1 ;;
    tests) do_tests=1 ;;
    train) do_train=1 ;;
    ranks) do_ranks=1 ;;
    bench) do_tsumugi=1 do_torch=1 ;;
    tsumugi) do_tsumugi=1 ;;
    torch) do_torch=1 ;;
    core) do_core=1 ;;
    env) ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown stage '$stage' (all, tests, train, ranks, bench, tsumugi, torch, core, env)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x /opt/torch/.venv/bin/python3 ]]; then python=/opt/torch/.venv/bin/python3; else python=python3; fi
fi

mkdir -p "$results"
rm -rf "$work"
mkdir -p "$work/xml"
: >"$work/stages.tsv"
: >"$work/suites.tsv"
: >"$work/tests.tsv"

# ---- the binaries: files stored as name.xz are expanded into $work ----
expand_bundle() {
  local dir f name
  for dir in bin lib; do
    mkdir -p "$work/$dir"
    for f in "$here/$dir"/*; do
      [[ -e $f ]] || continue
      name=$(basename "$f")
      if [[ $f == *.xz ]]; then
        if command -v xz >/dev/null; then
          xz -dc "$f" >"$work/$dir/${name%.xz}" || return 1
        else
          "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$f" "$work/$dir/${name%.xz}" || return 1
        fi
      else
        cp "$f" "$work/$dir/$name" || return 1
      fi
    done
  done
  chmod +x "$work"/bin/*
}
if ! expand_bundle; then
  echo "run.sh: cannot expand the bundle's binaries into $work" >&2
  exit 1
fi

# ---- NVIDIA's libraries: the CUDA wheels of the Python environment (PyTorch's own) ----
nvidia_lib_dirs() {
  if [[ -n ${TSU_NVIDIA_LIB_DIRS:-} ]]; then
    tr ':' '\n' <<<"$TSU_NVIDIA_LIB_DIRS"
    return
  fi
  local roots root
  # nvidia is a namespace package: its __path__ lists every site-packages/nvidia folder.
  roots=$(timeout 60 "$python" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)
  [[ -n $roots ]] || roots=$(find /opt/torch/.venv -type d -name nvidia -path '*site-packages*' 2>/dev/null)
  for root in $roots; do
    find "$root" -name 'lib*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null
  done | sort -u
}
nvidia_dirs=$(nvidia_lib_dirs | paste -sd:)
# Last resorts, behind the wheels: a CUDA toolkit and the driver's folder, where they exist.
fallback_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [[ -d $d ]] && fallback_dirs+=":$d"
done
ld_path="$work/lib${nvidia_dirs:+:$nvidia_dirs}$fallback_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Only tsumugi's binaries get this path: PyTorch keeps its own (our libstdc++ is older than its).
tsu() { LD_LIBRARY_PATH="$ld_path" "$@"; }

# ---- stage bookkeeping ----
record() {  # name, status, seconds, detail
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$work/stages.tsv"
}
time_left() { echo $((deadline - SECONDS)); }
limit_for() {  # the stage's own limit, cut to the time left in the run
  local cap=$1 left
  left=$(time_left)
  echo $((cap < left ? cap : left))
}
status_of() {  # exit code -> ok / failed / timed out / crashed (killed by a signal) / skipped
  case $1 in
    0) echo ok ;;
    77) echo skipped ;;
    124 | 137) echo "timed out" ;;
    1) echo failed ;;
    *) if (($1 > 128)); then echo "crashed ($(kill -l $(($1 - 128)) 2>/dev/null || echo "exit $1"))"; else echo "failed (exit $1)"; fi ;;
  esac
}

# ---- env: what this machine has, where the libraries come from ----
stage_env() {
  local env_txt=$results/env.txt
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(uname -n)  kernel: $(uname -r)  cpus: $(nproc)"
    echo "glibc: $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"
    echo "python: $python ($(timeout 30 "$python" --version 2>&1))"
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 | head -20
    echo "--- bundle BUILD_INFO"
    cat "$here/BUILD_INFO" 2>/dev/null
    echo "--- NVIDIA wheels"
    timeout 60 "$python" -c 'import importlib.metadata as m
for n, v in sorted((d.metadata["Name"] or "", d.version) for d in m.distributions()):
    if n.lower().startswith(("nvidia", "torch", "triton")): print(n, v)' 2>&1
    echo "--- library folders searched (LD_LIBRARY_PATH of tsumugi's binaries)"
    tr ':' '\n' <<<"$ld_path"
    echo "--- libcuda (the driver)"
    ldconfig -p 2>/dev/null | grep 'libcuda\.so' || echo "not in the ldconfig cache"
    echo "--- ldd tsumugi"
    tsu ldd "$work/bin/tsumugi"
    echo "--- tsumugi --version"
    tsu timeout 30 "$work/bin/tsumugi" --version 2>&1
  } >"$env_txt" 2>&1
  echo "== GPU"
  timeout 30 nvidia-smi -L 2>&1 || echo "nvidia-smi failed: no driver?"
  nvidia-smi --query-gpu=driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/driver, memory, max SM clock: /'
  echo "NVIDIA library folders: ${nvidia_dirs:-none found in the environment of $python}"
  local missing
  missing=$(tsu ldd "$work/bin/tsumugi" "$work/bin/test_cuda" 2>&1 | grep 'not found' | sort -u)
  if [[ -n $missing ]]; then
    echo "MISSING LIBRARIES (the binaries cannot start):"
    echo "$missing"
  fi
  tsu ldd "$work/bin/tsumugi" 2>/dev/null | awk '/lib(cudart|cublasLt|cudnn|nccl)\.so/ {print "  " $1 " -> " $3}'
  # cuDNN promises compatibility with newer 9.x runtimes, not with older ones.
  local built runtime
  built=$(awk -F': ' '$1 == "cudnn" {print $2}' "$here/BUILD_INFO" 2>/dev/null)
  runtime=$(grep -i '^nvidia-cudnn' "$env_txt" | awk '{print $2}' | head -1)
  if [[ -n $built && -n $runtime ]]; then
    echo "cuDNN: built against $built, runtime $runtime"
    if [[ $(printf '%s\n%s\n' "$built" "$runtime" | sort -V | head -1) != "$built" ]]; then
      echo "WARNING: the runtime cuDNN is older than the one tsumugi was built against"
    fi
  fi
  record env ok 0 "$(nvidia-smi -L 2>/dev/null | head -1)"
}

# ---- tests: test_cuda, one process per suite ----
stage_tests() {
  local bin=$work/bin/test_cuda log=$results/test_cuda.log
  local stage_limit stage_start=$SECONDS
  stage_limit=$(limit_for "${TSU_T_TESTS:-180}")
  local stage_end=$((SECONDS + stage_limit))
  local suite_cap=${TSU_T_SUITE:-90} filter=${TSU_GTEST_FILTER:-*}
  : >"$log"
  echo "== test_cuda (one process per suite; full output in test_cuda.log)"
  # "Suite." lines, then "  Test" lines (parameterised ones followed by "  # GetParam() = ...").
  tsu "$bin" --gtest_list_tests --gtest_filter="$filter" 2>>"$log" |
    awk '/^[^ ]/ {suite = $1; sub(/\.$/, "", suite); next} /^  [^ ]/ {print suite "\t" $1}' >"$work/tests.tsv"
  if [[ ! -s $work/tests.tsv ]]; then
    echo "test_cuda lists no tests:"
    tail -5 "$log"
    record test_cuda failed $((SECONDS - stage_start)) "test_cuda lists no tests: $(tail -1 "$log")"
    return
  fi
  local suite tests t rc s status detail left failed_suites=0
  for suite in $(cut -f1 "$work/tests.tsv" | uniq); do
    left=$((stage_end - SECONDS))
    if ((left < 5)); then
      printf '%s\t%s\t%s\t%s\n' "$suite" "not run" 0 "out of time" >>"$work/suites.tsv"
      continue
    fi
    t=$((suite_cap < left ? suite_cap : left))
    tests=$(awk -F'\t' -v s="$suite" '$1 == s {print s "." $2}' "$work/tests.tsv" | paste -sd:)
    s=$SECONDS
    # In a subshell, so that the shell's "Segmentation fault" notice lands in the log too.
    (timeout -k 5 "$t" env LD_LIBRARY_PATH="$ld_path" OMP_WAIT_POLICY=passive "$bin" --gtest_filter="$tests" \
      --gtest_output="xml:$work/xml/${suite//\//_}.xml" >"$work/suite.log" 2>&1; exit $?) 2>>"$work/suite.log"
    rc=$?
    cat "$work/suite.log" >>"$log"
    status=$(status_of "$rc")
    detail=""
    if [[ $status != ok && $status != failed ]]; then
      # The test that was running: the last one started and not finished.
      detail=$(awk '/^\[ RUN      \]/ {t = $4} /^\[       OK \]|^\[  FAILED  \]|^\[  SKIPPED \]/ {t = ""} END {print t}' \
        "$work/suite.log")
      echo "[ test_cuda: suite $suite $status after $((SECONDS - s)) s${detail:+ in $detail} ]" >>"$log"
    fi
    [[ $status == ok ]] || failed_suites=$((failed_suites + 1))
    printf '%s\t%s\t%s\t%s\n' "$suite" "$status" $((SECONDS - s)) "$detail" >>"$work/suites.tsv"
    printf '  %-36s %-12s %4d s %s\n' "$suite" "$status" $((SECONDS - s)) "$detail"
  done
  record test_cuda "$([[ $failed_suites == 0 ]] && echo ok || echo failed)" $((SECONDS - stage_start)) \
    "$(wc -l <"$work/suites.tsv") suites, $failed_suites not ok"
}

# ---- one command under a limit, its output appended to a log in $results ----
run_stage() {  # name, limit, log file name, command...
  local name=$1 cap=$2 log=$results/$3 t s rc status detail
  shift 3
  t=$(limit_for "$cap")
  if ((t < 15)); then
    record "$name" "not run" 0 "out of time"
    printf '  %-28s not run (out of time)\n' "$name"
    return
  fi
  echo "==== $name: $* (limit ${t}s)" >>"$log"
  s=$SECONDS
  (timeout -k 10 "$t" "$@" >"$work/stage.log" 2>&1; exit $?) 2>>"$work/stage.log"
  rc=$?
  cat "$work/stage.log" >>"$log"
  status=$(status_of "$rc")
  detail=""
  if [[ $status != ok && $status != skipped ]]; then
    # The error line if there is one (tsumugi's "tsumugi: error: ...", a Python exception), else the last.
    detail=$(grep -E '^tsumugi: |^bench_torch: |Error|error:|RESULT .*"error"' "$work/stage.log" | tail -1)
    [[ -n $detail ]] || detail="last output: $(grep -v -e '^Run with --help' -e '^\s*$' "$work/stage.log" | tail -1)"
    echo "[ $name: $status after $((SECONDS - s)) s ]" >>"$log"
  elif [[ $status == skipped ]]; then
    detail=$(tail -1 "$work/stage.log")
  fi
  record "$name" "$status" $((SECONDS - s)) "$detail"
  printf '  %-28s %-12s %4d s %s\n' "$name" "$status" $((SECONDS - s)) "${detail:0:160}"
}

# The tests call the tool by one path: a launcher that gives it the bundle's libraries.
tsumugi_launcher() {
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$ld_path" "$work/bin/tsumugi" >"$work/bin/tsumugi-run"
  chmod +x "$work/bin/tsumugi-run"
}

stage_train() {
  echo "== training on the GPU (gpu_train_test.sh; output in train.log)"
  : >"$results/train.log"
  tsumugi_launcher
  run_stage "gpu training" "${TSU_T_TRAIN:-120}" train.log bash "$here/tests/gpu_train_test.sh" "$work/bin/tsumugi-run"
}

stage_ranks() {
  echo "== two ranks on the GPU: pipeline stages, data parallelism (gpu_ranks_test.sh through the bundle's mpirun; output in ranks.log)"
  : >"$results/ranks.log"
  if [[ ! -x $here/ompi/bin/orterun || ! -f $here/mpirun-launcher.sh ]]; then
    record "gpu ranks" "not run" 0 "the bundle has no Open MPI (tools/gpu/bundle-open-mpi.sh)"
    printf '  %-28s not run (the bundle has no Open MPI)\n' "gpu ranks"
    return
  fi
  tsumugi_launcher
  bash "$here/mpirun-launcher.sh" "$here/ompi" "$work/lib" "$ld_path" "$work/bin/mpirun"
  run_stage "gpu ranks" "${TSU_T_RANKS:-90}" ranks.log env OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 bash "$here/tests/gpu_ranks_test.sh" "$work/bin/tsumugi-run" "$work/bin/mpirun"
}

stage_tsumugi() {
  echo "== tsumugi benchmarks (bf16, output in bench.log)"
  local tsumugi=$work/bin/tsumugi
  run_stage "tsumugi gemm" "${TSU_T_GEMM:-60}" bench.log env LD_LIBRARY_PATH="$ld_path" \
    "$tsumugi" bench gemm --device cuda --dtype bf16
  run_stage "tsumugi kernels" "${TSU_T_KERNELS:-40}" bench.log env LD_LIBRARY_PATH="$ld_path" \
    "$tsumugi" bench kernels --device cuda
  run_stage "tsumugi gpt2-124m" "${TSU_T_GPT2:-75}" bench.log env LD_LIBRARY_PATH="$ld_path" \
    "$tsumugi" bench train --preset gpt2-124m --device cuda --dtype bf16 --steps "$steps"
  run_stage "tsumugi llama-1b" "${TSU_T_LLAMA:-100}" bench.log env LD_LIBRARY_PATH="$ld_path" \
    "$tsumugi" bench train --preset llama-1b --device cuda --dtype bf16 --steps "$steps"
}

stage_torch() {
  echo "== PyTorch benchmarks (bf16 autocast, eager and torch.compile; output in bench.log)"
  run_stage "torch gpt2-124m" "${TSU_T_TORCH_GPT2:-130}" bench.log env PYTHONUNBUFFERED=1 \
    "$python" "$here/bench_torch.py" --models gpt2-124m --modes eager,compile --steps "$steps"
  run_stage "torch llama-1b" "${TSU_T_TORCH_LLAMA:-130}" bench.log env PYTHONUNBUFFERED=1 \
    "$python" "$here/bench_torch.py" --models llama-1b --modes eager,compile --steps "$steps"
}

stage_core() {
  echo "== test_core (CPU tests; output in core.log)"
  local t s rc
  t=$(limit_for "${TSU_T_CORE:-300}")
  s=$SECONDS
  (timeout -k 5 "$t" env LD_LIBRARY_PATH="$ld_path" "$work/bin/test_core" --gtest_brief=1 >"$results/core.log" 2>&1; exit $?) \
    2>>"$results/core.log"
  rc=$?
  record test_core "$(status_of "$rc")" $((SECONDS - s)) "$(grep -E '^\[  (PASSED|FAILED) ' "$results/core.log" | tr '\n' ' ')"
  printf '  %-28s %-12s %4d s\n' test_core "$(status_of "$rc")" $((SECONDS - s))
}

stage_env
((do_tests)) && stage_tests
((do_train)) && stage_train
((do_tsumugi || do_torch)) && : >"$results/bench.log"
((do_tsumugi)) && stage_tsumugi
((do_torch)) && stage_torch
# Last: the benchmarks are the figures the run is for, and this stage is the newest.
((do_ranks)) && stage_ranks
((do_core)) && stage_core

echo
if ! "$python" "$here/summarize.py" --work "$work" --results "$results" --seconds $((SECONDS - started)) \
  --build-info "$here/BUILD_INFO" | tee "$results/summary.txt"; then
  echo "run.sh: summarize.py failed; the raw stage table and results:"
  cat "$work/stages.tsv"
  grep -h '^RESULT ' "$results/bench.log" 2>/dev/null
fi
# 0 only when every stage that ran is ok.
! cut -f2 "$work/stages.tsv" | grep -qv '^ok$'

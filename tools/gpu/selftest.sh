#!/usr/bin/env bash
# Checks run-gpu-check.sh and summarize.py without a GPU: a fake bundle whose test_cuda passes,
# fails, crashes and hangs in different suites, whose tsumugi prints results or an error, and
# whose "python" stands in for PyTorch and hangs on the Llama. The summary must report each
# case, the run must stop at its limits, and the exit status must say that not all was ok.
#   tools/gpu/selftest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bundle=$dir/bundle
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/tests"
cp "$here/run-gpu-check.sh" "$bundle/run.sh"
cp "$here/summarize.py" "$bundle/summarize.py"
printf 'commit: selftest\ncudnn: 9.19.0\n' >"$bundle/BUILD_INFO"

cat >"$bundle/bin/test_cuda" <<'EOF'
#!/usr/bin/env bash
for a; do
  case $a in
    --gtest_list_tests) printf 'A.\n  One\n  Two\nB.\n  Crash\n  After\nC.\n  Hang\nP/D.\n  T/0  # GetParam() = 1\n'; exit 0 ;;
    --gtest_filter=*) filter=${a#--gtest_filter=} ;;
    --gtest_output=xml:*) xml=${a#--gtest_output=xml:} ;;
  esac
done
case $filter in
  A.*)
    printf '[ RUN      ] A.One\n[       OK ] A.One (1 ms)\n[ RUN      ] A.Two\nx.cpp:3: Failure\n[  FAILED  ] A.Two (1 ms)\n'
    cat >"$xml" <<X
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" failures="1"><testsuite name="A" tests="2" failures="1"><testcase name="One" status="run" result="completed" classname="A"/><testcase name="Two" status="run" result="completed" classname="A"><failure message="x.cpp:3&#x0A;Expected equality"/></testcase></testsuite></testsuites>
X
    exit 1 ;;
  B.*) echo "[ RUN      ] B.Crash"; kill -SEGV $$ ;;
  C.*) echo "[ RUN      ] C.Hang"; sleep 60 ;;
  P/D.*) printf '[ RUN      ] P/D.T/0\n[       OK ] P/D.T/0 (1 ms)\n' ;;
esac
EOF
cat >"$bundle/bin/tsumugi" <<'EOF'
#!/usr/bin/env bash
case "$*" in
  *"bench gemm"*) echo 'RESULT {"bench": "gemm", "impl": "tsumugi", "tflops": 700.0}' ;;
  *gpt2-124m*) echo 'RESULT {"bench": "train", "impl": "tsumugi", "preset": "gpt2-124m", "batch": 32, "seq": 1024, "step_ms": 60.0, "tokens_per_s": 546133.3, "model_tflops": 422.6, "gemm_tflops": 700.0, "mfu": 0.6037, "peak_mem_gib": 20.5}' ;;
  *llama-1b*) echo "tsumugi: error: [rope] something is wrong"; exit 1 ;;
  *--version*) printf 'tsumugi 0\ncuda: built, 0 device(s)\n' ;;
esac
EOF
cat >"$dir/python" <<'EOF'
#!/usr/bin/env bash
case "$1" in
  -c | --version | *summarize.py) exec python3 "$@" ;;
esac
echo 'RESULT {"bench": "gemm", "impl": "torch", "tflops": 780.0}'
case "$*" in
  *gpt2-124m*)
    echo 'RESULT {"bench": "train", "impl": "torch-eager", "preset": "gpt2-124m", "batch": 32, "seq": 1024, "step_ms": 90.0, "tokens_per_s": 364088.9, "model_tflops": 281.8, "gemm_tflops": 780.0, "mfu": 0.3613, "peak_mem_gib": 30.1}'
    echo 'RESULT {"bench": "train", "impl": "torch-compile", "preset": "gpt2-124m", "error": "RuntimeError: boom"}' ;;
  *) sleep 60 ;;
esac
EOF
printf '#!/bin/sh\necho "no CUDA device: skipped"\nexit 77\n' >"$bundle/tests/gpu_train_test.sh"
# The ranks stage: the real launcher in front of a fake orterun, which must see the bundle's
# Open MPI directories; the test then skips as it does without a GPU.
mkdir -p "$bundle/ompi/bin"
cp "$here/mpirun-launcher.sh" "$bundle/mpirun-launcher.sh"
cat >"$bundle/ompi/bin/orterun" <<'EOF'
#!/bin/sh
[ "$OPAL_PKGLIBDIR" = "$OPAL_PREFIX/lib/openmpi3" ] && [ "$OMPI_MCA_btl" = self,vader ] && echo "orterun $*"
EOF
cat >"$bundle/tests/gpu_ranks_test.sh" <<'EOF'
#!/bin/sh
[ "$("$2" -np 2 "$1" --version)" = "orterun -np 2 $1 --version" ] || { echo "the launcher did not run orterun"; exit 1; }
echo "no CUDA device: skipped"
exit 77
EOF
chmod +x "$bundle"/bin/* "$bundle/ompi/bin/orterun" "$dir/python"

status=0
OUT=$dir/out PYTHON=$dir/python TSU_GPU_WORK=$dir/work TSU_T_SUITE=3 TSU_T_TORCH_LLAMA=16 \
  bash "$bundle/run.sh" >"$dir/console.txt" 2>&1 || status=$?
fail() { echo "selftest: $1"; cat "$dir/console.txt"; exit 1; }
[[ $status == 1 ]] || fail "run.sh exited $status, expected 1 (not every stage ok)"
expect() { grep -qF -- "$1" "$dir/console.txt" || fail "the summary lacks: $1"; }
expect_re() { grep -qE -- "$1" "$dir/console.txt" || fail "the summary lacks: $1"; }
expect "test_cuda: 2 passed, 1 failed, 0 skipped, 1 crashed (SEGV), 1 not run, 1 timed out (of 6 tests)"
expect "FAILED    A.Two: x.cpp:3"
expect "CRASHED (SEGV) B.Crash"
expect "TIMED OUT C.Hang"
expect "gpu training           skipped"
expect "gpu ranks              skipped"
expect_re "^tsumugi llama-1b +failed +[0-9]+  tsumugi: error: \\[rope\\] something is wrong"
expect "gpt2-124m  tsumugi         32 x 1024     60.0    546,133    422.6    700  0.604      20.5"
expect "gpt2-124m  torch-compile                    -          -        -      -      -         -  RuntimeError: boom"
expect "llama-1b   torch-eager"
expect_re "timed out after 1[6-9] s"
expect "gpt2-124m MFU >= 0.50: yes"
[[ $(tail -1 "$dir/console.txt") == =* ]] || fail "the summary is not the last thing printed"
for f in env.txt test_cuda.log test_cuda.xml train.log ranks.log bench.log summary.txt; do
  [[ -s $dir/out/$f ]] || fail "no $f in OUT"
done
python3 -c 'import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); assert r.get("tests") == "6", r.attrib' \
  "$dir/out/test_cuda.xml" || fail "test_cuda.xml does not hold the 6 tests"
echo "selftest: run-gpu-check.sh and summarize.py behave (passed, failed, crashed, hung, skipped, errors)"

#!/usr/bin/env bash
# Exact resume: a run killed with SIGKILL at several points and resumed with --resume auto ends
# with a model.safetensors byte-identical to an uninterrupted run, and the same losses.
# Usage: resume_test.sh TSUMUGI_BINARY
set -euo pipefail
tsumugi=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

"$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/a" > "$work/a.log" 2>&1

mkdir -p "$work/b"
for kill_at in 7 18 23 34; do
  "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/b" > "$work/b.log" 2>&1 &
  pid=$!
  while [ "$(steps_done "$work/b")" -lt "$kill_at" ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  echo "killed at step $(steps_done "$work/b") (aimed at $kill_at)"
done
"$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/b" > "$work/b.log" 2>&1
grep -q "resuming from" "$work/b.log" || { echo "the last run did not resume"; cat "$work/b.log"; exit 1; }

cmp "$work/a/checkpoints/latest/model.safetensors" "$work/b/checkpoints/latest/model.safetensors"
cmp "$work/a/checkpoints/latest/optimizer.safetensors" "$work/b/checkpoints/latest/optimizer.safetensors"
diff <(losses "$work/a") <(losses "$work/b")
echo "4 SIGKILLs and resumes: model and optimizer byte-identical, $(losses "$work/a" | wc -l) losses identical"

# SIGTERM (and SIGINT): the step in progress finishes, a checkpoint is saved, the exit code is 0.
for signal in TERM INT; do
  rm -rf "$work/c"
  "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/c" > "$work/c.log" 2>&1 &
  pid=$!
  while [ "$(steps_done "$work/c")" -lt 12 ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
  kill -$signal $pid
  code=0
  wait $pid || code=$?
  [ $code -eq 0 ] || { echo "SIG$signal: exit code $code"; cat "$work/c.log"; exit 1; }
  grep -q "stopped (signal)" "$work/c.log" || { echo "SIG$signal: no clean stop"; cat "$work/c.log"; exit 1; }
  stopped=$(steps_done "$work/c")
  [ "$(readlink "$work/c/checkpoints/latest")" = "$(printf 'step-%08d' "$stopped")" ] \
    || { echo "SIG$signal: no checkpoint of step $stopped"; exit 1; }
  "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/c" > "$work/c.log" 2>&1
  cmp "$work/a/checkpoints/latest/model.safetensors" "$work/c/checkpoints/latest/model.safetensors"
  echo "SIG$signal at step $stopped: exit 0 with a checkpoint of that step; resumed to identical bytes"
done

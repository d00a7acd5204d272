#!/usr/bin/env bash
# Random SIGKILLs and exact resume: 20 runs of the tiny recipe are killed with SIGKILL, half at a
# step drawn from a seeded random sequence (TSUMUGI_INJECT_FAULT=kill@STEP), half with `kill -9`
# from outside 0-24 ms after a random step, mostly in runs saving every step (so that kills land
# in checkpoint writes and in the removal of old checkpoints). Each killed run is followed by
# `--resume auto`, itself killed again, in 4 chains of 5 kills whose last resume runs to the end.
# After every kill the next run must resume from the newest complete checkpoint with no warning,
# `latest` must load (checked after the outside kills), and every complete checkpoint on disk
# must be byte-identical (model and optimizer) to the uninterrupted run's of the same step; each
# chain must end with the final model, optimizer and all losses byte-identical. Prints a table
# of the kills at the end.
# Usage: kill_resume_test.sh TSUMUGI_BINARY   (TSUMUGI_KILL_SEED=N replays a sequence of kill
# steps; TSUMUGI_KEEP_WORK=1 keeps the runs)
set -euo pipefail
tsumugi=$1
work=$(mktemp -d)
trap '[ -n "${TSUMUGI_KEEP_WORK:-}" ] && echo "kept $work" || rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
start_time=$SECONDS
make_fixture

seed=${TSUMUGI_KILL_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
echo "seed $seed (replay with TSUMUGI_KILL_SEED=$seed)"

# stdout line-buffered, so that a killed run's "resuming from" line is not lost with it.
train() { stdbuf -oL "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$1" "${@:2}"; }
# train_bg LOG DIR ARGS...: the same in the background; $pid is tsumugi itself (exec), not a
# subshell that a kill -9 would end while tsumugi goes on.
train_bg() {
  local log=$1
  shift
  (exec stdbuf -oL "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$1" "${@:2}" > "$log" 2>&1) &
  pid=$!
}

# The uninterrupted reference saves every step and keeps them all.
train "$work/ref" --set checkpoint.every=1 --set checkpoint.keep=100 > "$work/ref.log" 2>&1
ref=$work/ref/checkpoints
[ -d "$ref/step-00000040" ] || { echo "FAIL: the reference run did not finish"; cat "$work/ref.log"; exit 1; }

fail() { echo "FAIL: $*" >&2; exit 1; }
step_of() { local name=${1##*/step-}; echo $((10#$name)); }
# The complete checkpoints of a run (a step directory with its three files), oldest first. A kill
# can also leave a step-N.tmp-PID directory (killed while writing) or a step directory that lacks
# files (killed while an old checkpoint was being removed, keep = 2); resume must ignore both.
complete_dirs() {
  local dir
  for dir in $(ls -d "$1"/checkpoints/step-???????? 2> /dev/null); do
    [ -f "$dir/trainer.json" ] && [ -f "$dir/model.safetensors" ] && [ -f "$dir/optimizer.safetensors" ] && echo "$dir"
  done
  return 0
}
newest() {
  local last
  last=$(complete_dirs "$1" | tail -n 1)
  if [ -n "$last" ]; then step_of "$last"; else echo 0; fi
}
# Every complete checkpoint byte-identical to the reference's of its step; prints their steps.
check_identical() {
  local dir steps=""
  for dir in $(complete_dirs "$1"); do
    for file in model.safetensors optimizer.safetensors; do
      cmp -s "$dir/$file" "$ref/${dir##*/}/$file" || fail "$dir/$file differs from the uninterrupted run's"
    done
    steps+="${steps:+,}$(step_of "$dir")"
  done
  echo "${steps:--}"
}
# check_resumed LOG STEP: the run resumed from the checkpoint of STEP (started afresh when 0).
check_resumed() {
  if [ "$2" -eq 0 ]; then
    grep -q "resuming from" "$1" && { cat "$1"; fail "$1: resumed, but there was no checkpoint"; }
  else
    grep -q "resuming from .*/step-$(printf '%08d' "$2") (step $2)" "$1" \
      || { cat "$1"; fail "$1: did not resume from the newest checkpoint, step $2"; }
  fi
  return 0
}
# Five kill steps in [2, 38], sorted, at least 3 apart (a kill lands past the previous run's last
# logged step, so that the next kill is seen only once the new run gets there; when an outside
# kill overshoots anyway, the next kill moves past the resumed step); into $steps. In
# this shell, not a $(...) subshell, which would draw from a freshly seeded $RANDOM.
draw_steps() {
  local i ok=0
  while [ $ok -eq 0 ]; do
    steps=()
    for i in 0 1 2 3 4; do steps+=($((2 + RANDOM % 37))); done
    IFS=$'\n' steps=($(printf '%s\n' "${steps[@]}" | sort -n))
    unset IFS
    ok=1
    for i in 1 2 3 4; do [ $((steps[i] - steps[i - 1])) -ge 3 ] || ok=0; done
  done
}

# Leftovers of kills: step-N.tmp-PID (a write cut short) and step directories lacking files (a
# removal cut short); both must stay invisible to resume.
count_tmp() { ls -d "$1"/checkpoints/step-*.tmp-* 2> /dev/null | wc -l; }
count_partial() {
  echo $(( $(ls -d "$1"/checkpoints/step-???????? 2> /dev/null | wc -l) - $(complete_dirs "$1" | wc -l) ))
}

# Chains: name, checkpoint.every, and how each of its 5 kills is done (i: injected, x: kill -9).
chains=("A 5 iiiii" "B 1 xxxxx" "C 2 ixixi" "D 1 xixix")
kills=0 resumes=0 identical=0 mid_write=0 mid_removal=0 chains_identical=0
table=$(printf '%4s %5s %5s %-12s %6s %8s %7s  %s' kill chain every how "steps" resumed newest \
  "complete checkpoints on disk, all identical to the reference")
for chain in "${chains[@]}"; do
  read -r name every how <<< "$chain"
  dir=$work/run-$name
  draw_steps
  echo "chain $name, checkpoint.every = $every, kills (i: kill@STEP, x: kill -9 from outside) $how at steps ${steps[*]}"
  resumed_expected=0
  for j in 0 1 2 3 4; do
    at=${steps[$j]} kind=${how:$j:1} log=$work/run-$name-$j.log
    # An outside kill lands 0-24 ms after its step, and a step of the tiny recipe takes about
    # 10 ms on an idle machine: the run may have saved a checkpoint past the next drawn step.
    # The kill then goes one step past where this run resumes, so that it still lands in a step.
    [ "$at" -gt "$resumed_expected" ] || at=$((resumed_expected + 1))
    tmp_before=$(count_tmp "$dir") partial_before=$(count_partial "$dir")
    if [ "$kind" = i ]; then
      TSUMUGI_INJECT_FAULT=kill@$at train_bg "$log" "$dir" --set checkpoint.every=$every
      what="kill@$at"
    else
      train_bg "$log" "$dir" --set checkpoint.every=$every
      while [ "$(steps_done "$dir")" -lt "$at" ] && kill -0 $pid 2> /dev/null; do sleep 0.01; done
      delay=$((RANDOM % 25))
      sleep "$(printf '0.%03d' $delay)"
      kill -9 $pid 2> /dev/null || true
      what="-9 @$at+${delay}ms"
    fi
    code=0
    wait $pid 2> /dev/null || code=$?
    [ $code -eq 137 ] || { cat "$log"; fail "chain $name run $j: exit code $code, not killed (137)"; }
    kills=$((kills + 1))
    # This run resumed from the newest complete checkpoint the kill before left (or started afresh).
    check_resumed "$log" "$resumed_expected"
    grep -q "warning" "$log" && { cat "$log"; fail "chain $name run $j: a warning"; }
    note=""
    [ "$(count_tmp "$dir")" -gt "$tmp_before" ] && { note+=" (killed writing a checkpoint)"; mid_write=$((mid_write + 1)); }
    [ "$(count_partial "$dir")" -gt "$partial_before" ] \
      && { note+=" (killed removing an old checkpoint)"; mid_removal=$((mid_removal + 1)); }
    on_disk=$(check_identical "$dir") || exit 1
    last=$(newest "$dir")
    if [ "$last" -gt 0 ] && [ "$kind" = x ]; then  # after a kill at any moment, what `latest` names loads
      "$tsumugi" eval --checkpoint "$dir" --data "$work/shards/val" --batch 2 > "$work/eval.log" 2>&1 \
        || { cat "$work/eval.log"; fail "the latest checkpoint of $dir does not load"; }
    fi
    identical=$((identical + 1))
    table+=$(printf '\n%4d %5s %5d %-12s %3d-%-2d %8d %7d  %s%s' $kills "$name" "$every" "$what" "$resumed_expected" \
      "$(steps_done "$dir")" "$resumed_expected" "$last" "$on_disk" "$note")
    resumed_expected=$last
  done
  # The last resume of the chain runs to the end.
  train "$dir" --set checkpoint.every=$every > "$work/run-$name-end.log" 2>&1 \
    || { cat "$work/run-$name-end.log"; fail "chain $name: the final resume failed"; }
  check_resumed "$work/run-$name-end.log" "$resumed_expected"
  resumes=$((resumes + 5))
  cmp "$ref/step-00000040/model.safetensors" "$dir/checkpoints/step-00000040/model.safetensors"
  cmp "$ref/step-00000040/optimizer.safetensors" "$dir/checkpoints/step-00000040/optimizer.safetensors"
  diff <(losses "$work/ref") <(losses "$dir") > /dev/null || fail "chain $name: the losses differ"
  chains_identical=$((chains_identical + 1))
  echo "chain $name: 5 kills, 5 resumes; final model, optimizer and 40 losses byte-identical"
done

echo "$table"
echo "kills: $kills ($mid_write while writing a checkpoint, $mid_removal while removing one), resumes: $resumes" \
  "(each from the newest complete checkpoint), identical: $identical of $kills (every checkpoint after each kill)," \
  "final checkpoints identical: $chains_identical of ${#chains[@]} chains; $((SECONDS - start_time)) s"
[ $identical -eq 20 ] && [ $chains_identical -eq ${#chains[@]} ]

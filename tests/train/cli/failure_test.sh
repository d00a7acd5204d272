#!/usr/bin/env bash
# Bad recipes, missing data, a tokenizer that does not match the shards, a full disk during a
# checkpoint, a kill during checkpoint writes, and corrupted, truncated, unreadable and
# mismatched checkpoints: each ends with one clear message and a non-zero exit (or resumes from
# the last good checkpoint), never a crash or a lost checkpoint.
# Usage: failure_test.sh TSUMUGI_BINARY
set -euo pipefail
tsumugi=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

run() { "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/$1" "${@:2}"; }

expect_error "unknown key" "did you mean 'train.lr'" run bad --set train.learning_rate=1
expect_error "bad value" "train.lr" run bad --set train.lr=fast
expect_error "bad recipe file" "recipe.toml:2" bash -c "printf '[train]\nsteps = = 3\n' > $work/recipe.toml; $tsumugi train $work/recipe.toml"
expect_error "missing recipe" "cannot read recipe" "$tsumugi" train "$work/none.toml"
expect_error "missing data" "$work/nothing" run bad --set data.train="$work/nothing"
expect_error "missing tokenizer" "$work/none.model" run bad --set data.tokenizer="$work/none.model"
"$tsumugi" tokenizer train "$work/corpus.jsonl" --out "$work/other" --vocab-size 450 --no-seed --threads 1 > /dev/null
expect_error "tokenizer mismatch" "tokenizer" run bad --set data.tokenizer="$work/other.model"

# A full disk while writing the checkpoint of step 10 (ulimit -f: writes past 64 KiB fail).
run full --set train.steps=5 > /dev/null
expect_error "full disk" "step-00000010" bash -c "ulimit -f 64; exec $tsumugi train $work/tiny.toml --set checkpoint.dir=$work/full --set train.steps=10"
[ "$(readlink "$work/full/checkpoints/latest")" = "step-00000005" ] || { echo "FAIL: latest moved"; exit 1; }
ls "$work/full/checkpoints" | grep -q tmp && { echo "FAIL: a temporary checkpoint was left behind"; exit 1; }
"$tsumugi" eval --checkpoint "$work/full" --data "$work/shards" > /dev/null
echo "ok   full disk: checkpoint of step 5 intact and loadable"

# Kills at random moments of a run that saves every step: the newest checkpoint always loads.
# (exec: $pid is tsumugi, not a subshell that kill -9 would end while tsumugi goes on; each kill
# comes 10-90 ms after the run has gone past the step the previous one reached.)
for i in 1 2 3 4 5; do
  before=$(steps_done "$work/kills")
  (exec "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/kills" --set checkpoint.every=1 \
    --set train.steps=30 > /dev/null 2>&1) &
  pid=$!
  while [ "$(steps_done "$work/kills")" -le "$before" ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
  sleep "0.0$((RANDOM % 9 + 1))"
  kill -9 $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  if [ -e "$work/kills/checkpoints/latest" ]; then
    "$tsumugi" eval --checkpoint "$work/kills" --data "$work/shards" > /dev/null
  fi
done
echo "ok   5 kills during a run saving every step: the latest checkpoint always loaded"

# A corrupted newest checkpoint: resume reports it and continues from the one before.
run corrupt --set train.steps=10 > /dev/null
printf '\x42' | dd of="$work/corrupt/checkpoints/step-00000010/model.safetensors" bs=1 seek=200 conv=notrunc 2> /dev/null
run corrupt --set train.steps=12 > "$work/out.log" 2> "$work/err.log"
grep -q "skipping damaged checkpoint" "$work/err.log" || { echo "FAIL: no warning"; cat "$work/err.log"; exit 1; }
grep -q "resuming from .*step-00000005" "$work/out.log" || { echo "FAIL: did not resume from step 5"; exit 1; }
echo "ok   corrupted checkpoint: skipped with a warning, resumed from step 5"

# A truncated newest checkpoint (a copy cut short): eval, generate and export of the run and the
# resumed run each warn, naming the file, and take the checkpoint before; named by its own
# directory, it is one error naming the file. Then a trainer.json that is not JSON, and a resume
# with another [model] section: one error naming the checkpoint.
run cut --set train.steps=10 > /dev/null
cut=$work/cut/checkpoints/step-00000010
truncate -s $(( $(stat -c %s "$cut/model.safetensors") / 2 )) "$cut/model.safetensors"
warning="warning: skipping damaged checkpoint: $cut/model.safetensors has [0-9]* bytes, expected [0-9]* (truncated?)"
for command in "eval --data $work/shards" "generate --prompt 東京 --max-tokens 4" "export --out $work/hf-cut"; do
  $tsumugi $command --checkpoint "$work/cut" > "$work/out.log" 2> "$work/err.log" \
    || { echo "FAIL: $command of a run with a truncated checkpoint"; cat "$work/err.log"; exit 1; }
  grep -q "$warning" "$work/err.log" || { echo "FAIL: $command: no warning"; cat "$work/err.log"; exit 1; }
done
grep -q "^exported $work/cut/checkpoints/step-00000005 to" "$work/out.log" || { echo "FAIL: export took another"; exit 1; }
expect_error "truncated checkpoint named by its directory" "$cut/model.safetensors has .* (truncated?)" \
  "$tsumugi" eval --checkpoint "$cut" --data "$work/shards"
run cut --set train.steps=12 > "$work/out.log" 2> "$work/err.log"
grep -q "$warning" "$work/err.log" || { echo "FAIL: resume: no warning"; cat "$work/err.log"; exit 1; }
grep -q "resuming from .*step-00000005" "$work/out.log" || { echo "FAIL: did not resume from step 5"; exit 1; }
echo "ok   truncated checkpoint: eval, generate, export and resume warn and take step 5"
printf 'not json' > "$work/cut/checkpoints/step-00000012/trainer.json"
"$tsumugi" eval --checkpoint "$work/cut" --data "$work/shards" > "$work/out.log" 2> "$work/err.log"
grep -q "warning: skipping damaged checkpoint: $work/cut/checkpoints/step-00000012/trainer.json is not valid JSON" \
  "$work/err.log" || { echo "FAIL: trainer.json: no warning"; cat "$work/err.log"; exit 1; }
grep -q "step-00000010 (step 10)" "$work/out.log" || { echo "FAIL: eval did not take step 10"; cat "$work/out.log"; exit 1; }
echo "ok   a trainer.json that is not JSON: skipped with a warning naming it"
rm -r "$work/cut/checkpoints/step-00000012"
expect_error "checkpoint of another model" "step-00000010 was trained with a different \[model\] section" \
  run cut --set train.steps=14 --set model.dim=32

# A NaN loss injected at step 7: "skip" drops that update, logs it and goes on; "stop" saves the
# weights from before the step and ends with an error.
TSUMUGI_INJECT_FAULT=nan@7 run nan-skip --set train.steps=10 --set train.on_nonfinite=skip > "$work/out.log" 2>&1
grep -q "step 7: non-finite loss or gradient norm, update skipped" "$work/out.log" || { echo "FAIL: skip not reported"; exit 1; }
grep -q '"event":"nonfinite"' "$work/nan-skip/metrics.jsonl" || { echo "FAIL: skip not logged"; exit 1; }
[ "$(readlink "$work/nan-skip/checkpoints/latest")" = "step-00000010" ] || { echo "FAIL: the skip run did not finish"; exit 1; }
echo "ok   NaN at step 7 with on_nonfinite = skip: update skipped, logged, run finished"
TSUMUGI_INJECT_FAULT=inf@4 run inf-skip --set train.steps=6 --set train.on_nonfinite=skip > "$work/out.log" 2>&1
grep -q "step 4: non-finite loss or gradient norm, update skipped" "$work/out.log" || { echo "FAIL: inf skip not reported"; exit 1; }
grep -q '"event":"nonfinite".*"step":4}' "$work/inf-skip/metrics.jsonl" || { echo "FAIL: inf skip not logged"; exit 1; }
echo "ok   +inf at step 4 with on_nonfinite = skip: update skipped, logged, run finished"
TSUMUGI_INJECT_FAULT=nan@7 expect_error "NaN with on_nonfinite = stop" "non-finite loss (nan) or gradient norm" \
  run nan-stop --set train.steps=10 --set train.on_nonfinite=stop --set checkpoint.every=0
[ "$(readlink "$work/nan-stop/checkpoints/latest")" = "step-00000006" ] || { echo "FAIL: no checkpoint of step 6"; exit 1; }
echo "ok   NaN with on_nonfinite = stop: the weights before step 7 saved as step 6"

# A loss spike (the loss of step 25 reported 10x, as after a bad batch) against a window of 10
# steps: "skip" drops that update and logs the event with the window's statistics; "stop" saves
# the weights from before the step and ends with an error; a run without spikes flags none.
spikes=(--set train.steps=30 --set train.spike_zscore=6 --set train.spike_window=10 --set checkpoint.every=0)
run no-spike "${spikes[@]}" > "$work/out.log" 2>&1
grep -q '"event":"loss_spike"' "$work/no-spike/metrics.jsonl" && { echo "FAIL: a spike flagged in a normal run"; exit 1; }
TSUMUGI_INJECT_FAULT=spike@25 run spike-skip "${spikes[@]}" --set train.on_spike=skip > "$work/out.log" 2>&1
grep -q "step 25: loss spike .* update skipped" "$work/out.log" || { echo "FAIL: spike not reported"; cat "$work/out.log"; exit 1; }
grep '"event":"loss_spike"' "$work/spike-skip/metrics.jsonl" | grep -q '"window_mean"' || { echo "FAIL: spike not logged"; exit 1; }
[ "$(readlink "$work/spike-skip/checkpoints/latest")" = "step-00000030" ] || { echo "FAIL: the skip run did not finish"; exit 1; }
echo "ok   loss spike at step 25 with on_spike = skip: update skipped, logged with the window's mean and threshold"
TSUMUGI_INJECT_FAULT=spike@25 expect_error "loss spike with on_spike = stop" "loss spike at step 25" \
  run spike-stop "${spikes[@]}" --set train.on_spike=stop
[ "$(readlink "$work/spike-stop/checkpoints/latest")" = "step-00000024" ] || { echo "FAIL: no checkpoint of step 24"; exit 1; }
echo "ok   loss spike with on_spike = stop: the weights before step 25 saved as step 24"

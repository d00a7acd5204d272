#!/usr/bin/env bash
# `tsumugi export --format hf`: for a GPT-2 and an untied Llama, the directory holds what
# transformers needs, and an independent NumPy model built from config.json alone decodes the
# same greedy tokens as `tsumugi generate --temperature 0`.
# Usage: export_test.sh TSUMUGI_BINARY PYTHON REFERENCE_DIR
set -euo pipefail
tsumugi=$1
python=$2
reference=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/fixture.sh"
make_fixture

for arch in gpt2 llama; do
  "$tsumugi" train "$work/tiny.toml" --set checkpoint.dir="$work/$arch" --set model.arch=$arch \
    --set model.tied_embeddings=$([ $arch = gpt2 ] && echo true || echo false) --set model.kv_heads=$([ $arch = llama ] && echo 1 || echo 0) \
    --set train.steps=15 > /dev/null
  "$tsumugi" export --checkpoint "$work/$arch" --format hf --out "$work/$arch-hf" > /dev/null
  "$tsumugi" generate --checkpoint "$work/$arch" --prompt "東京の天気は" --temperature 0 --max-tokens 16 \
    --ignore-eos --show-ids > "$work/gen.txt"
  prompt=$(sed -n 's/^prompt_ids=//p' "$work/gen.txt")
  generated=$(sed -n 's/^generated_ids=//p' "$work/gen.txt")
  PYTHONPATH="$reference" "$python" "$reference/hf_export_check.py" "$work/$arch-hf" "$prompt" "$generated"
done

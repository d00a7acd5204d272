#!/usr/bin/env bash
# Standard tools read tsumugi's shards: h5ls and h5dump list the datasets and attributes, and the
# tokens, dumped by h5dump, decode with SentencePiece's own spm_decode to the input text.
# Usage: standard_tools_test.sh TSUMUGI_BINARY
set -euo pipefail
tsumugi=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A corpus of one-line documents (a blank line after each), mixing Japanese, ASCII and emoji.
RANDOM=7
words=(東京 天気 晴れ ファイル 設定 を 変更 する します の は が データ 学習 model data run token "、" "。" " " 😀)
for d in $(seq 1 400); do
  line=""
  for w in $(seq 1 $((5 + RANDOM % 20))); do line+=${words[$((RANDOM % ${#words[@]}))]}; done
  printf '%s%d。\n\n' "$line" "$d"
done > "$work/corpus.txt"
printf '最後: 鬱蒼 𠮷 🦊\n\n' >> "$work/corpus.txt"

"$tsumugi" tokenizer train "$work/corpus.txt" --out "$work/tok" --vocab-size 400 --no-seed > /dev/null
"$tsumugi" prep "$work/corpus.txt" --tokenizer "$work/tok.model" --out "$work/out" --val-fraction 0 > /dev/null 2>&1
shard="$work/out/train/shard-00000.h5"

listing=$(h5ls -r "$shard")
grep -q '^/tokens *Dataset' <<< "$listing" || { echo "h5ls: no /tokens"; exit 1; }
grep -q '^/doc_offsets *Dataset' <<< "$listing" || { echo "h5ls: no /doc_offsets"; exit 1; }
attributes=$(h5dump -A "$shard")
for name in format format_version tokenizer_sha256 vocab_size eos_id token_count document_count source_bytes checksum; do
  grep -q "ATTRIBUTE \"$name\"" <<< "$attributes" || { echo "h5dump: no attribute $name"; exit 1; }
done
grep -q "$(sha256sum "$work/tok.model" | cut -d' ' -f1)" <<< "$attributes" || { echo "h5dump: wrong tokenizer sha"; exit 1; }
grep -q 'DATATYPE  H5T_STD_U16LE' <<< "$(h5dump -H -d /tokens "$shard")" || { echo "h5dump: /tokens not uint16"; exit 1; }

# Tokens and document offsets as raw little-endian arrays, one document per line of ids.
h5dump -d /tokens -b LE -o "$work/tokens.bin" "$shard" > /dev/null
h5dump -d /doc_offsets -b LE -o "$work/offsets.bin" "$shard" > /dev/null
od -An -v -tu2 -w2 "$work/tokens.bin" | tr -d ' ' > "$work/tokens.txt"
od -An -v -tu8 -w8 "$work/offsets.bin" | tr -d ' ' > "$work/offsets.txt"
awk 'NR == FNR { ends[NR] = $1; n = NR; next }
     { ids = ids (ids == "" ? "" : " ") $1; count++
       if (count == ends[doc + 2]) { print ids; ids = ""; doc++ } }' \
  "$work/offsets.txt" "$work/tokens.txt" > "$work/ids.txt"
spm_decode --model "$work/tok.model" --input_format id --input "$work/ids.txt" --output "$work/decoded.txt"
grep -v '^$' "$work/corpus.txt" > "$work/expected.txt"
if ! cmp -s "$work/expected.txt" "$work/decoded.txt"; then
  echo "spm_decode of the shard differs from the input:"
  diff "$work/expected.txt" "$work/decoded.txt" | head -5
  exit 1
fi
echo "standard tools: h5ls, h5dump and spm_decode read $(wc -l < "$work/decoded.txt") documents"

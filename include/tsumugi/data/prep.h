#pragma once
/// Prep: corpus files -> tokenized HDF5 shards (OUT/train, OUT/val, OUT/tokenizer.model).
/// Inputs are cut into blocks of about `block_bytes`; the output depends only on the inputs, the
/// tokenizer and the options, never on the thread count or the number of ranks.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <tsumugi/data/documents.h>
#include <tsumugi/data/shard.h>

namespace tsumugi {

/// How far prep has come, passed to PrepOptions::progress after each block.
struct PrepProgress {
  uint64_t input_bytes_done = 0;   ///< bytes of the input files (compressed) consumed
  uint64_t input_bytes_total = 0;  ///< all input files together
  uint64_t text_bytes = 0;         ///< UTF-8 bytes of document text tokenized so far
  uint64_t documents = 0;
  uint64_t tokens = 0;
  double seconds = 0;              ///< since the start
};

/// Settings of prep.
struct PrepOptions {
  std::vector<std::string> inputs;      ///< files (.jsonl/.txt, optionally .gz/.zst), in order
  std::string tokenizer_path;           ///< SentencePiece model
  std::string out_dir;                  ///< gets train/, val/ and tokenizer.model
  std::string text_field = "text";      ///< JSON field of the text in .jsonl
  OnInvalid on_invalid = OnInvalid::stop;  ///< bad records: stop with an error, or skip
  double val_fraction = 0.005;          ///< share of documents in the validation split
  uint64_t shard_tokens = 100'000'000;  ///< a shard closes once it holds at least this many
  int threads = 0;                      ///< encoder threads; 0 means all cores
  uint64_t block_bytes = 1 << 20;       ///< raw input per unit of work
  std::function<void(const PrepProgress&)> progress;  ///< called from the calling thread
};

/// Counts of one split.
struct SplitSummary {
  uint64_t shards = 0, documents = 0, tokens = 0, source_bytes = 0;
};

/// What prep did.
struct PrepSummary {
  SplitSummary train, val;            ///< the two splits
  uint64_t blocks = 0;                ///< units of work
  std::vector<InputProblem> skipped;  ///< records left out under OnInvalid::skip, in input order
  double seconds = 0;                 ///< wall time
};

/// Runs prep in this process with `threads` encoder threads.
PrepSummary prepare_shards(const PrepOptions& options);

/// Step 1 of multi-process prep: rank `rank` of `world` encodes blocks rank, rank + world, ...
/// into OUT/.parts/part-RANK.bin. Every rank reads the whole input to number the blocks.
void prepare_shard_part(const PrepOptions& options, int rank, int world);

/// Step 2, on one rank after every rank finished step 1: merges the parts in block order into
/// the same shards that prepare_shards writes, then removes OUT/.parts.
PrepSummary merge_shard_parts(const PrepOptions& options, int world);

/// Whether a document (by its text) belongs to the validation split: a stable hash of the
/// text below `val_fraction`, so duplicates always land in the same split.
bool is_validation_document(std::string_view text, double val_fraction);

}  // namespace tsumugi

#pragma once
// Internal: prep's unit of work. A RawBlock is encoded into an EncodedBlock by a worker thread;
// blocks are consumed strictly in order, either into shards or into a rank's part file.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <tsumugi/data/prep.h>
#include <tsumugi/tokenizer/tokenizer.h>

#include "records.h"

namespace tsumugi::data_internal {

/// Tokens of the documents of one split within a block.
struct EncodedSplit {
  std::vector<int32_t> tokens;      ///< documents back to back, each ending with EOS
  std::vector<uint64_t> doc_ends;   ///< end of each document in tokens
  std::vector<uint64_t> doc_bytes;  ///< UTF-8 bytes of each document's text
};

/// A block after tokenization.
struct EncodedBlock {
  uint64_t index = 0;
  EncodedSplit train, val;
  std::vector<InputProblem> problems;  ///< records left out (or, when fatal, the one that stops)
  bool fatal = false;                  ///< a bad record under OnInvalid::stop
  uint64_t text_bytes = 0;
  uint64_t documents = 0;
  uint64_t input_position = 0;
};

/// Tokenizes every record of `block`.
EncodedBlock encode_block(const RawBlock& block, const RecordReader& reader, const Tokenizer& tokenizer,
                          const PrepOptions& options);

/// Reads all input, encodes the blocks owned by `rank` (index % world == rank) on `threads`
/// threads, and hands them to `consume` in index order on the calling thread.
void run_block_pipeline(const PrepOptions& options, const Tokenizer& tokenizer, int rank, int world,
                        const std::function<void(EncodedBlock&&)>& consume);

/// Appends `block` to a part file; reads the next block of a part file (false at its end).
void write_block(std::FILE* file, const EncodedBlock& block, const std::string& path);
bool read_block(std::FILE* file, EncodedBlock& block, const std::string& path);

}  // namespace tsumugi::data_internal

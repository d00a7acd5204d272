#pragma once
// The reads both shard fuzzers make of a shard file: open it with and without checksum
// verification, then read documents, tokens and the checksum, accepting only tsumugi's errors.
#include <tsumugi/data/shard.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"

namespace tsumugi::fuzz {

inline void read_shard_every_way(const std::string& path) {
  for (const bool verify : {false, true}) {
    expect_only_tsumugi_errors([&] {
      const ShardReader shard = ShardReader::open(path, verify);
      const uint64_t documents = shard.doc_offsets().size() - 1;
      for (uint64_t d = 0; d < std::min<uint64_t>(documents, 64); ++d) (void)shard.document_tokens(d);
      const uint64_t count = std::min<uint64_t>(shard.info().token_count, 4096);
      std::vector<int32_t> tokens(count);
      shard.read_tokens(0, count, tokens.data());
      (void)shard.compute_checksum();
    });
  }
}

}  // namespace tsumugi::fuzz

// Fuzzes the shard reader on raw file bytes: the input is a whole shard-00000.h5, mutated below
// the HDF5 structures. This mostly tests libhdf5 itself, which has memory-safety bugs on such
// files that tsumugi cannot fix (docs/reliability.md), so it is not in CI's list; tools/fuzz.sh
// runs it when named. fuzz_shard covers tsumugi's own checks with well-formed HDF5.
#include <tsumugi/data/shard.h>

#include <algorithm>
#include <vector>

#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  const std::string path = (fuzz::scratch_dir() / "shard-00000.h5").string();
  fuzz::write_file(path, fuzz::as_text(data, size));
  for (const bool verify : {false, true}) {
    fuzz::expect_only_tsumugi_errors([&] {
      const ShardReader shard = ShardReader::open(path, verify);
      const uint64_t documents = shard.doc_offsets().size() - 1;
      for (uint64_t d = 0; d < std::min<uint64_t>(documents, 64); ++d) (void)shard.document_tokens(d);
      const uint64_t count = std::min<uint64_t>(shard.info().token_count, 4096);
      std::vector<int32_t> tokens(count);
      shard.read_tokens(0, count, tokens.data());
      (void)shard.compute_checksum();
    });
  }
  return 0;
}

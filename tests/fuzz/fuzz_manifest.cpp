// Fuzzes manifest.json of a split folder through ShardSet::open: the input replaces manifest.json
// beside two valid shards written at start-up by ShardSetWriter, so that mutations reach the
// checks of the manifest against the shards (names, counts, checksums, tokenizer).
#include <tsumugi/data/shard.h>

#include <algorithm>
#include <vector>

#include "fuzz/fuzz_util.h"

namespace {

const std::string& split_dir() {
  static const std::string dir = [] {
    const std::string d = (tsumugi::fuzz::scratch_dir() / "train").string();
    tsumugi::fuzz::write_shard_fixture(d);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  const std::string& dir = split_dir();
  fuzz::write_file(dir + "/manifest.json", fuzz::as_text(data, size));
  fuzz::expect_only_tsumugi_errors([&] {
    const ShardSet set = ShardSet::open(dir, {.verify_checksums = true, .expected_tokenizer_sha256 = std::string(64, 'a')});
    const uint64_t count = std::min<uint64_t>(set.total_tokens(), 4096);
    std::vector<int32_t> tokens(count);
    set.read_tokens(0, count, tokens.data());
  });
  return 0;
}

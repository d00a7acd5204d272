// Fuzzes the shard reader on raw file bytes: the input is a whole shard-00000.h5, mutated below
// the HDF5 structures. This mostly tests libhdf5 itself, which has memory-safety bugs on such
// files that tsumugi cannot fix (docs/reliability.md), so it is not in CI's list; tools/fuzz.sh
// runs it when named. fuzz_shard covers tsumugi's own checks with well-formed HDF5.
#include "fuzz/fuzz_util.h"
#include "fuzz/shard_reads.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  const std::string path = (fuzz::scratch_dir() / "shard-00000.h5").string();
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::read_shard_every_way(path);
  return 0;
}

// Fuzzes the shard reader's own checks with well-formed HDF5: the input chooses the contents of a
// shard (tokens, document offsets, dataset types, shapes and layouts, and each attribute correct,
// wrong, of the wrong type or missing), which is written with libhdf5 and then opened without and
// with verification, every document read. (Raw file bytes: fuzz_shard_file.)
#include <fuzzer/FuzzedDataProvider.h>
#include <tsumugi/data/shard.h>

#include <algorithm>
#include <vector>

#include "data/hdf5_util.h"
#include "fuzz/fuzz_util.h"
#include "fuzz/shard_reads.h"

namespace tsumugi::data_internal {
uint32_t crc32_update(uint32_t crc, const void* bytes, size_t size);
std::string checksum_string(uint32_t crc);
}  // namespace tsumugi::data_internal

namespace {

using namespace tsumugi;
using data_internal::H5Handle;

// How one attribute is written: as it should be, with another value, with another type, or not.
enum class Variant { right, other_value, other_type, missing };

Variant choose(FuzzedDataProvider& in) {
  const int pick = in.ConsumeIntegralInRange(0, 15);
  return pick < 12 ? Variant::right : static_cast<Variant>(pick - 11);
}

void string_attribute(hid_t file, const char* name, const std::string& value, FuzzedDataProvider& in) {
  switch (choose(in)) {
    case Variant::right: data_internal::write_string_attribute(file, name, value); break;
    case Variant::other_value: data_internal::write_string_attribute(file, name, in.ConsumeRandomLengthString(80)); break;
    case Variant::other_type: data_internal::write_u64_attribute(file, name, in.ConsumeIntegral<uint64_t>()); break;
    case Variant::missing: break;
  }
}

void u64_attribute(hid_t file, const char* name, uint64_t value, FuzzedDataProvider& in) {
  switch (choose(in)) {
    case Variant::right: data_internal::write_u64_attribute(file, name, value); break;
    case Variant::other_value: data_internal::write_u64_attribute(file, name, in.ConsumeIntegral<uint64_t>()); break;
    case Variant::other_type: data_internal::write_string_attribute(file, name, "12"); break;
    case Variant::missing: break;
  }
}

// Writes a one-dimensional dataset (or, when asked, a two-dimensional one) of `count` elements.
bool write_dataset(hid_t file, const char* name, hid_t file_type, hid_t memory_type, const void* data, uint64_t count,
                   FuzzedDataProvider& in) {
  const int layout = in.ConsumeIntegralInRange(0, 7);  // mostly contiguous, as tsumugi writes
  const bool two_dimensional = in.ConsumeIntegralInRange(0, 31) == 0 && count % 2 == 0 && count > 0;
  const hsize_t dims1[1] = {count};
  const hsize_t dims2[2] = {count / 2, 2};
  H5Handle space(two_dimensional ? H5Screate_simple(2, dims2, nullptr) : H5Screate_simple(1, dims1, nullptr), H5Sclose);
  H5Handle properties(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (layout >= 5 && count > 0) {
    const hsize_t chunk[2] = {std::max<hsize_t>(1, std::min<hsize_t>(two_dimensional ? count / 2 : count, 64)), 2};
    H5Pset_chunk(properties.get(), two_dimensional ? 2 : 1, chunk);
    if (layout == 7) H5Pset_deflate(properties.get(), 1);
  } else {
    H5Pset_layout(properties.get(), H5D_CONTIGUOUS);
  }
  H5Handle dataset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) return false;
  return count == 0 || H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

// A type for /tokens or /doc_offsets: usually the right one, sometimes signed, big-endian or wider.
hid_t dataset_type(hid_t right, FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange(0, 19)) {
    case 0: return H5T_STD_I32LE;
    case 1: return H5T_STD_U16BE;
    case 2: return H5T_STD_U64LE;
    case 3: return H5T_IEEE_F32LE;
    case 4: return H5T_STD_U8LE;
    default: return right;
  }
}

bool write_shard(const std::string& path, FuzzedDataProvider& in) {
  const bool wide = in.ConsumeBool();
  const uint64_t vocab = in.ConsumeIntegralInRange(0, 7) == 0 ? in.ConsumeIntegral<uint32_t>() : (wide ? 70000 : 300);
  const int32_t eos = 2;
  std::vector<uint32_t> tokens;
  std::vector<uint64_t> offsets{0};
  const int documents = in.ConsumeIntegralInRange(0, 12);
  for (int d = 0; d < documents; ++d) {
    const int length = in.ConsumeIntegralInRange(0, 24);
    for (int t = 0; t < length; ++t) tokens.push_back(in.ConsumeIntegralInRange<uint32_t>(0, wide ? 69999 : 299));
    if (in.ConsumeIntegralInRange(0, 15) != 0) tokens.push_back(eos);
    offsets.push_back(tokens.size());
  }
  if (in.ConsumeIntegralInRange(0, 7) == 0 && !tokens.empty())
    tokens[in.ConsumeIntegralInRange<size_t>(0, tokens.size() - 1)] = in.ConsumeIntegral<uint32_t>();
  if (in.ConsumeIntegralInRange(0, 7) == 0)
    offsets[in.ConsumeIntegralInRange<size_t>(0, offsets.size() - 1)] = in.ConsumeIntegral<uint64_t>();
  std::vector<uint16_t> tokens16(tokens.begin(), tokens.end());
  const void* token_bytes = wide ? static_cast<const void*>(tokens.data()) : tokens16.data();
  const uint64_t width = wide ? 4 : 2;
  uint32_t crc = data_internal::crc32_update(0, token_bytes, tokens.size() * width);
  crc = data_internal::crc32_update(crc, offsets.data(), offsets.size() * sizeof(uint64_t));

  H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) return false;
  string_attribute(file.get(), "format", kShardFormat, in);
  u64_attribute(file.get(), "format_version", kShardFormatVersion, in);
  string_attribute(file.get(), "tokenizer_sha256", std::string(64, 'a'), in);
  u64_attribute(file.get(), "vocab_size", vocab, in);
  if (choose(in) != Variant::missing) data_internal::write_i32_attribute(file.get(), "eos_id", eos);
  u64_attribute(file.get(), "token_count", tokens.size(), in);
  u64_attribute(file.get(), "document_count", offsets.size() - 1, in);
  u64_attribute(file.get(), "source_bytes", tokens.size() * 3, in);
  string_attribute(file.get(), "checksum", data_internal::checksum_string(crc), in);
  const uint64_t token_extent = in.ConsumeIntegralInRange(0, 15) == 0 ? tokens.size() / 2 : tokens.size();
  if (in.ConsumeIntegralInRange(0, 31) != 0 &&
      !write_dataset(file.get(), "tokens", dataset_type(wide ? H5T_STD_U32LE : H5T_STD_U16LE, in),
                     wide ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT16, token_bytes, token_extent, in))
    return false;
  if (in.ConsumeIntegralInRange(0, 31) != 0 &&
      !write_dataset(file.get(), "doc_offsets", dataset_type(H5T_STD_U64LE, in), H5T_NATIVE_UINT64, offsets.data(),
                     offsets.size(), in))
    return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string path = (fuzz::scratch_dir() / "shard-00000.h5").string();
  {
    data_internal::H5ErrorCapture quiet;
    if (!write_shard(path, in)) return 0;
  }
  fuzz::read_shard_every_way(path);
  return 0;
}

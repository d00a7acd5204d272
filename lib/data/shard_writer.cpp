// ShardSetWriter: documents into HDF5 shards of contiguous uint16/uint32 tokens.
#include <zlib.h>

#include <filesystem>

#include <tsumugi/data/shard.h>

#include "atomic_file.h"
#include "core/check.h"
#include "hdf5_util.h"

namespace tsumugi {

using data_internal::H5ErrorCapture;
using data_internal::H5Handle;

namespace data_internal {
/// CRC-32 (zlib) of `bytes`, continuing from `crc`.
uint32_t crc32_update(uint32_t crc, const void* bytes, size_t size) {
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(bytes), size));
}
std::string checksum_string(uint32_t crc) { return fmt::format("crc32:{:08x}", crc); }
}  // namespace data_internal

struct ShardSetWriter::Impl {
  std::string dir, split, tokenizer_sha256;
  uint64_t vocab_size = 0;
  int32_t eos_id = -1;
  uint64_t shard_tokens = 0;
  uint32_t token_width = 2;
  std::vector<uint16_t> tokens16;
  std::vector<uint32_t> tokens32;
  std::vector<uint64_t> doc_offsets{0};
  uint64_t source_bytes = 0;
  ShardManifest manifest;
  bool finished = false;
  bool failed = false;  // a shard could not be written: the writer takes nothing more

  uint64_t open_tokens() const { return doc_offsets.back(); }
  void write_shard();
  void write_shard_or_fail() {
    try {
      write_shard();
    } catch (...) {
      failed = true;
      throw;
    }
  }
};

namespace {

void write_dataset(hid_t file, const char* name, hid_t file_type, hid_t memory_type, const void* data, uint64_t count,
                   const std::string& path) {
  const hsize_t dims[1] = {count};
  H5Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  H5Handle properties(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  // Contiguous and unfiltered, so that readers can memory-map the tokens; no timestamps, so that
  // the same input gives the same bytes.
  H5Pset_layout(properties.get(), H5D_CONTIGUOUS);
  H5Pset_obj_track_times(properties.get(), false);
  H5Handle dataset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT),
                   H5Dclose);
  TSU_CHECK(dataset.valid(), IOError, "[shard] {}: cannot create {}", path, name);
  TSU_CHECK(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, IOError,
            "[shard] {}: cannot write {}", path, name);
}

}  // namespace

void ShardSetWriter::Impl::write_shard() {
  namespace fs = std::filesystem;
  const uint64_t count = open_tokens();
  const uint64_t documents = doc_offsets.size() - 1;
  const std::string name = fmt::format("shard-{:05d}.h5", manifest.shards.size());
  const std::string path = (fs::path(dir) / name).string();
  const void* token_data = token_width == 2 ? static_cast<const void*>(tokens16.data()) : tokens32.data();
  uint32_t crc = data_internal::crc32_update(0, token_data, count * token_width);
  crc = data_internal::crc32_update(crc, doc_offsets.data(), doc_offsets.size() * sizeof(uint64_t));
  const std::string checksum = data_internal::checksum_string(crc);
  // HDF5 builds the file in memory (the core driver, no backing store) and tsumugi writes the
  // image itself: HDF5 never meets a failing write (after one, closing the file fails and the
  // library crashes at exit), a full disk is one clear error, and the shard appears under its
  // name only once complete (write_file_atomically).
  std::string image;
  {
    std::lock_guard lock(data_internal::hdf5_mutex());
    H5ErrorCapture errors;
    H5Handle creation(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    H5Pset_obj_track_times(creation.get(), false);
    H5Handle access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    const uint64_t estimate = count * token_width + doc_offsets.size() * sizeof(uint64_t) + (64 << 10);
    TSU_CHECK(H5Pset_fapl_core(access.get(), static_cast<size_t>(std::min<uint64_t>(estimate, uint64_t{1} << 30)),
                               false) >= 0,
              IOError, "[shard] {}: cannot set up the in-memory file: {}", path, errors.message());
    H5Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, creation.get(), access.get()), H5Fclose);
    TSU_CHECK(file.valid(), IOError, "[shard] {}: cannot create: {}", path, errors.message());
    write_dataset(file.get(), "tokens", token_width == 2 ? H5T_STD_U16LE : H5T_STD_U32LE,
                  token_width == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32, token_data, count, path);
    write_dataset(file.get(), "doc_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, doc_offsets.data(), doc_offsets.size(),
                  path);
    using namespace data_internal;
    write_string_attribute(file.get(), "format", kShardFormat);
    write_u64_attribute(file.get(), "format_version", kShardFormatVersion);
    write_string_attribute(file.get(), "tokenizer_sha256", tokenizer_sha256);
    write_u64_attribute(file.get(), "vocab_size", vocab_size);
    write_i32_attribute(file.get(), "eos_id", eos_id);
    write_u64_attribute(file.get(), "token_count", count);
    write_u64_attribute(file.get(), "document_count", documents);
    write_u64_attribute(file.get(), "source_bytes", source_bytes);
    write_string_attribute(file.get(), "checksum", checksum);
    // The tokens now live in HDF5's memory: free them before the image doubles it.
    std::vector<uint16_t>().swap(tokens16);
    std::vector<uint32_t>().swap(tokens32);
    TSU_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, IOError, "[shard] {}: cannot build the file image: {}", path,
              errors.message());  // the metadata, from HDF5's cache into the image
    const ssize_t size = H5Fget_file_image(file.get(), nullptr, 0);
    TSU_CHECK(size > 0, IOError, "[shard] {}: cannot build the file image: {}", path, errors.message());
    image.resize(static_cast<size_t>(size));
    TSU_CHECK(H5Fget_file_image(file.get(), image.data(), image.size()) == size, IOError,
              "[shard] {}: cannot build the file image: {}", path, errors.message());
  }
  data_internal::write_file_atomically(path, image, "shard");
  manifest.shards.push_back({name, count, documents, source_bytes, image.size(), checksum});
  manifest.tokens += count;
  manifest.documents += documents;
  manifest.source_bytes += source_bytes;
  tokens16.clear();
  tokens32.clear();
  doc_offsets.assign(1, 0);
  source_bytes = 0;
}

ShardSetWriter::ShardSetWriter(std::string dir, std::string split, std::string tokenizer_sha256, uint64_t vocab_size,
                               int32_t eos_id, uint64_t shard_tokens)
    : impl_(std::make_unique<Impl>()) {
  namespace fs = std::filesystem;
  TSU_CHECK(shard_tokens > 0, ValueError, "[shards] shard_tokens must be positive");
  TSU_CHECK(vocab_size > 0 && vocab_size <= (uint64_t(1) << 32), ValueError, "[shards] vocab_size {} out of range",
            vocab_size);
  Impl& d = *impl_;
  d.dir = std::move(dir);
  d.split = std::move(split);
  d.tokenizer_sha256 = std::move(tokenizer_sha256);
  d.vocab_size = vocab_size;
  d.eos_id = eos_id;
  d.shard_tokens = shard_tokens;
  d.token_width = vocab_size <= 65536 ? 2 : 4;
  fs::create_directories(d.dir);
  for (const auto& entry : fs::directory_iterator(d.dir)) {
    const std::string name = entry.path().filename().string();
    if ((name.starts_with("shard-") && (name.ends_with(".h5") || name.ends_with(".h5.tmp"))) || name == "manifest.json" ||
        name == "manifest.json.tmp") {
      fs::remove(entry.path());
    }
  }
  d.manifest.split = d.split;
  d.manifest.tokenizer_sha256 = d.tokenizer_sha256;
  d.manifest.vocab_size = vocab_size;
  d.manifest.eos_id = eos_id;
  d.manifest.token_dtype = d.token_width == 2 ? "uint16" : "uint32";
}

ShardSetWriter::~ShardSetWriter() = default;

void ShardSetWriter::add_document(std::span<const int32_t> tokens, uint64_t source_bytes) {
  Impl& d = *impl_;
  TSU_CHECK(!d.finished, ValueError, "[shards] add_document after finish");
  TSU_CHECK(!d.failed, IOError, "[shards] {}: an earlier shard could not be written", d.dir);
  TSU_CHECK(!tokens.empty() && tokens.back() == d.eos_id, ValueError,
            "[shards] a document must end with EOS ({}); got {} tokens", d.eos_id, tokens.size());
  for (int32_t id : tokens) {
    TSU_CHECK(id >= 0 && static_cast<uint64_t>(id) < d.vocab_size, ValueError,
              "[shards] token id {} outside the vocabulary [0, {})", id, d.vocab_size);
  }
  if (d.token_width == 2) {
    d.tokens16.insert(d.tokens16.end(), tokens.begin(), tokens.end());
  } else {
    d.tokens32.insert(d.tokens32.end(), tokens.begin(), tokens.end());
  }
  d.doc_offsets.push_back(d.doc_offsets.back() + tokens.size());
  d.source_bytes += source_bytes;
  if (d.open_tokens() >= d.shard_tokens) d.write_shard_or_fail();
}

ShardManifest ShardSetWriter::finish() {
  Impl& d = *impl_;
  TSU_CHECK(!d.finished, ValueError, "[shards] finish called twice");
  TSU_CHECK(!d.failed, IOError, "[shards] {}: an earlier shard could not be written; no manifest.json", d.dir);
  if (d.open_tokens() > 0) d.write_shard_or_fail();
  d.finished = true;
  d.manifest.save(d.dir);
  return d.manifest;
}

}  // namespace tsumugi

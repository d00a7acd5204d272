// ShardReader and ShardSet: open, check and memory-map HDF5 token shards.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <tsumugi/data/shard.h>

#include "core/check.h"
#include "hdf5_util.h"

namespace tsumugi {

namespace data_internal {
uint32_t crc32_update(uint32_t crc, const void* bytes, size_t size);
std::string checksum_string(uint32_t crc);
}  // namespace data_internal

using data_internal::H5ErrorCapture;
using data_internal::H5Handle;

struct ShardReader::Impl {
  ShardInfo info;
  void* mapping = MAP_FAILED;
  size_t mapping_size = 0;
  const unsigned char* tokens = nullptr;  // token_count * token_width bytes
  std::vector<unsigned char> owned_tokens;  // when /tokens is not contiguous and cannot be mapped
  std::vector<uint64_t> doc_offsets;
  ~Impl() {
    if (mapping != MAP_FAILED) munmap(mapping, mapping_size);
  }
};

namespace {

#define TSU_SHARD_CHECK(cond, path, ...) TSU_CHECK(cond, IOError, "[shard] {}: {}", path, fmt::format(__VA_ARGS__))

struct DatasetLayout {
  uint64_t length = 0;
  haddr_t offset = HADDR_UNDEF;  // file offset of contiguous data, or undefined
  size_t element_size = 0;
};

DatasetLayout describe_dataset(hid_t dataset, const std::string& path, const char* name, bool is_tokens) {
  DatasetLayout layout;
  H5Handle type(H5Dget_type(dataset), H5Tclose);
  H5Handle space(H5Dget_space(dataset), H5Sclose);
  TSU_SHARD_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, path, "/{} is not one-dimensional", name);
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  layout.length = dims[0];
  layout.element_size = H5Tget_size(type.get());
  const bool little_unsigned = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE &&
                               H5Tget_order(type.get()) == H5T_ORDER_LE;
  if (is_tokens) {
    TSU_SHARD_CHECK(little_unsigned && (layout.element_size == 2 || layout.element_size == 4), path,
                    "/tokens is not little-endian uint16 or uint32");
  } else {
    TSU_SHARD_CHECK(little_unsigned && layout.element_size == 8, path, "/{} is not little-endian uint64", name);
  }
  H5Handle properties(H5Dget_create_plist(dataset), H5Pclose);
  if (H5Pget_layout(properties.get()) == H5D_CONTIGUOUS && H5Pget_nfilters(properties.get()) == 0) {
    layout.offset = H5Dget_offset(dataset);
  }
  return layout;
}

}  // namespace

ShardReader::ShardReader(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

ShardReader ShardReader::open(const std::string& path, bool verify_checksum) {
  namespace fs = std::filesystem;
  std::error_code error;
  TSU_SHARD_CHECK(fs::is_regular_file(path, error), path, "missing (no such file)");
  const uint64_t file_size = fs::file_size(path, error);
  auto impl = std::make_shared<Impl>();
  ShardInfo& info = impl->info;
  info.path = path;
  DatasetLayout tokens_layout;
  {
    std::lock_guard lock(data_internal::hdf5_mutex());
    H5ErrorCapture errors;
    H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    TSU_SHARD_CHECK(file.valid(), path, "not a readable HDF5 file (truncated or corrupt): {}", errors.message());
    using namespace data_internal;
    std::string format;
    TSU_SHARD_CHECK(read_string_attribute(file.get(), "format", format) && format == kShardFormat, path,
                    "attribute format is not \"{}\" (not a tsumugi shard)", kShardFormat);
    uint64_t version = 0;
    TSU_SHARD_CHECK(read_u64_attribute(file.get(), "format_version", version) && version == kShardFormatVersion, path,
                    "format_version {} is not the supported {}", version, kShardFormatVersion);
    info.format_version = static_cast<uint32_t>(version);
    int64_t eos = -1;
    const bool attributes_ok = read_string_attribute(file.get(), "tokenizer_sha256", info.tokenizer_sha256) &&
                               read_u64_attribute(file.get(), "vocab_size", info.vocab_size) &&
                               read_i64_attribute(file.get(), "eos_id", eos) &&
                               read_u64_attribute(file.get(), "token_count", info.token_count) &&
                               read_u64_attribute(file.get(), "document_count", info.document_count) &&
                               read_u64_attribute(file.get(), "source_bytes", info.source_bytes) &&
                               read_string_attribute(file.get(), "checksum", info.checksum);
    TSU_SHARD_CHECK(attributes_ok, path, "missing or malformed attributes: {}", errors.message());
    info.eos_id = static_cast<int32_t>(eos);
    H5Handle tokens(H5Dopen2(file.get(), "tokens", H5P_DEFAULT), H5Dclose);
    TSU_SHARD_CHECK(tokens.valid(), path, "no /tokens dataset: {}", errors.message());
    H5Handle offsets(H5Dopen2(file.get(), "doc_offsets", H5P_DEFAULT), H5Dclose);
    TSU_SHARD_CHECK(offsets.valid(), path, "no /doc_offsets dataset: {}", errors.message());
    tokens_layout = describe_dataset(tokens.get(), path, "tokens", true);
    const DatasetLayout offsets_layout = describe_dataset(offsets.get(), path, "doc_offsets", false);
    info.token_width = static_cast<uint32_t>(tokens_layout.element_size);
    TSU_SHARD_CHECK(tokens_layout.length == info.token_count, path,
                    "/tokens holds {} tokens but attribute token_count says {}", tokens_layout.length, info.token_count);
    TSU_SHARD_CHECK(info.document_count <= info.token_count, path,
                    "document_count {} exceeds token_count {} (every document holds at least its EOS)",
                    info.document_count, info.token_count);
    TSU_SHARD_CHECK(offsets_layout.length == info.document_count + 1, path,
                    "/doc_offsets holds {} entries but document_count + 1 is {}", offsets_layout.length,
                    info.document_count + 1);
    TSU_SHARD_CHECK((info.vocab_size <= 65536) == (info.token_width == 2), path,
                    "tokens are {}-byte but vocab_size is {}", info.token_width, info.vocab_size);
    // Sizes come from the file: check them against the file before anything is allocated or mapped.
    for (const auto& [layout, name] : {std::pair{tokens_layout, "tokens"}, std::pair{offsets_layout, "doc_offsets"}}) {
      if (layout.offset != HADDR_UNDEF) {
        TSU_SHARD_CHECK(layout.offset <= file_size && layout.length <= (file_size - layout.offset) / layout.element_size,
                        path, "truncated: /{} holds {} elements of {} bytes from byte {} but the file has {} bytes", name,
                        layout.length, layout.element_size, layout.offset, file_size);
      } else {
        // Chunked or compressed (h5repack): deflate, HDF5's usual filter, shrinks data at most 1032-fold.
        TSU_SHARD_CHECK(layout.length <= std::min<uint64_t>(file_size, uint64_t{1} << 50) * 1032 / layout.element_size,
                        path, "/{} claims {} elements, more than a file of {} bytes can hold even compressed", name,
                        layout.length, file_size);
      }
    }
    impl->doc_offsets.resize(offsets_layout.length);
    TSU_SHARD_CHECK(H5Dread(offsets.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            impl->doc_offsets.data()) >= 0,
                    path, "cannot read /doc_offsets: {}", errors.message());
    if (tokens_layout.offset == HADDR_UNDEF && info.token_count > 0) {
      // Chunked or filtered (e.g. after h5repack): read it into memory instead of mapping it.
      impl->owned_tokens.resize(info.token_count * info.token_width);
      TSU_SHARD_CHECK(H5Dread(tokens.get(), info.token_width == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32, H5S_ALL,
                              H5S_ALL, H5P_DEFAULT, impl->owned_tokens.data()) >= 0,
                      path, "cannot read /tokens: {}", errors.message());
      impl->tokens = impl->owned_tokens.data();
    }
  }
  if (tokens_layout.offset != HADDR_UNDEF && info.token_count > 0) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    TSU_SHARD_CHECK(fd >= 0, path, "cannot open for reading: {}", std::strerror(errno));
    impl->mapping_size = file_size;
    impl->mapping = mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    TSU_SHARD_CHECK(impl->mapping != MAP_FAILED, path, "cannot memory-map: {}", std::strerror(errno));
    impl->tokens = static_cast<const unsigned char*>(impl->mapping) + tokens_layout.offset;
  }
  const auto& offsets = impl->doc_offsets;
  TSU_SHARD_CHECK(offsets.front() == 0 && offsets.back() == info.token_count, path,
                  "/doc_offsets does not run from 0 to token_count {}", info.token_count);
  TSU_SHARD_CHECK(std::adjacent_find(offsets.begin(), offsets.end(), std::greater_equal<>()) == offsets.end(), path,
                  "/doc_offsets is not strictly increasing (an empty document)");
  ShardReader reader(std::move(impl));
  if (verify_checksum) {
    const std::string computed = reader.compute_checksum();
    TSU_SHARD_CHECK(computed == info.checksum, path,
                    "checksum mismatch: the data hashes to {} but attribute checksum says {} (corrupt file)", computed,
                    info.checksum);
    std::vector<int32_t> last(1);
    for (size_t d = 1; d < offsets.size(); ++d) {
      reader.read_tokens(offsets[d] - 1, 1, last.data());
      TSU_SHARD_CHECK(last[0] == info.eos_id, path, "document {} does not end with EOS ({})", d - 1, info.eos_id);
    }
    // Token ids index embedding tables and counts: each must lie inside the vocabulary.
    std::vector<int32_t> block(std::min<uint64_t>(info.token_count, 1 << 16));
    for (uint64_t start = 0; start < info.token_count; start += block.size()) {
      const uint64_t n = std::min<uint64_t>(block.size(), info.token_count - start);
      reader.read_tokens(start, n, block.data());
      for (uint64_t i = 0; i < n; ++i) {
        TSU_SHARD_CHECK(static_cast<uint32_t>(block[i]) < info.vocab_size, path,
                        "token {} is id {}, outside the vocabulary of {}", start + i, static_cast<uint32_t>(block[i]),
                        info.vocab_size);
      }
    }
  }
  return reader;
}

const ShardInfo& ShardReader::info() const { return impl_->info; }
const std::vector<uint64_t>& ShardReader::doc_offsets() const { return impl_->doc_offsets; }

void ShardReader::read_tokens(uint64_t start, uint64_t count, int32_t* out) const {
  const ShardInfo& info = impl_->info;
  TSU_CHECK(start + count <= info.token_count && start + count >= start, IndexError,
            "[shard] {}: tokens [{}, {}) outside [0, {})", info.path, start, start + count, info.token_count);
  if (info.token_width == 2) {
    const auto* source = reinterpret_cast<const uint16_t*>(impl_->tokens) + start;
    for (uint64_t i = 0; i < count; ++i) out[i] = source[i];
  } else {
    const auto* source = reinterpret_cast<const uint32_t*>(impl_->tokens) + start;
    for (uint64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(source[i]);
  }
}

std::vector<int32_t> ShardReader::document_tokens(uint64_t index) const {
  const auto& offsets = impl_->doc_offsets;
  TSU_CHECK(index + 1 < offsets.size(), IndexError, "[shard] {}: document {} outside [0, {})", impl_->info.path, index,
            offsets.size() - 1);
  std::vector<int32_t> tokens(offsets[index + 1] - offsets[index]);
  read_tokens(offsets[index], tokens.size(), tokens.data());
  return tokens;
}

std::string ShardReader::compute_checksum() const {
  const auto& offsets = impl_->doc_offsets;
  uint32_t crc = data_internal::crc32_update(0, impl_->tokens, impl_->info.token_count * impl_->info.token_width);
  crc = data_internal::crc32_update(crc, offsets.data(), offsets.size() * sizeof(uint64_t));
  return data_internal::checksum_string(crc);
}

ShardSet ShardSet::open(const std::string& dir, const ShardSetOptions& options) {
  namespace fs = std::filesystem;
  ShardSet set;
  set.manifest_ = ShardManifest::load(dir);
  const ShardManifest& manifest = set.manifest_;
  const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  if (!options.expected_tokenizer_sha256.empty()) {
    TSU_CHECK(manifest.tokenizer_sha256 == options.expected_tokenizer_sha256, IOError,
              "[shards] {}: made with another tokenizer: tokenizer SHA-256 {} but the given tokenizer is {}",
              manifest_path, manifest.tokenizer_sha256, options.expected_tokenizer_sha256);
  }
  uint64_t documents = 0, source_bytes = 0;
  for (const auto& entry : manifest.shards) {
    const std::string path = (fs::path(dir) / entry.file).string();  // a plain name (ShardManifest::load)
    std::error_code error;
    TSU_SHARD_CHECK(fs::is_regular_file(path, error), path, "missing: listed in {} but not on disk", manifest_path);
    const uint64_t size = fs::file_size(path, error);
    TSU_SHARD_CHECK(!error, path, "cannot read: {}", error.message());
    TSU_SHARD_CHECK(size >= entry.file_bytes, path, "truncated: {} bytes but manifest.json says {}", size,
                    entry.file_bytes);
    ShardReader shard = ShardReader::open(path, options.verify_checksums);
    const ShardInfo& info = shard.info();
    TSU_SHARD_CHECK(info.tokenizer_sha256 == manifest.tokenizer_sha256, path,
                    "made with another tokenizer: tokenizer SHA-256 {} but manifest.json says {}",
                    info.tokenizer_sha256, manifest.tokenizer_sha256);
    TSU_SHARD_CHECK(info.vocab_size == manifest.vocab_size && info.eos_id == manifest.eos_id, path,
                    "vocab_size {} / eos_id {} differ from manifest.json's {} / {}", info.vocab_size, info.eos_id,
                    manifest.vocab_size, manifest.eos_id);
    TSU_SHARD_CHECK(info.checksum == entry.checksum && info.token_count == entry.tokens &&
                        info.document_count == entry.documents,
                    path, "not the shard manifest.json lists: checksum {} / {} tokens, manifest.json says {} / {}",
                    info.checksum, info.token_count, entry.checksum, entry.tokens);
    TSU_SHARD_CHECK(info.source_bytes == entry.source_bytes, path,
                    "source_bytes {} but manifest.json says {}", info.source_bytes, entry.source_bytes);
    set.shards_.push_back(std::move(shard));
    set.starts_.push_back(set.starts_.back() + info.token_count);
    documents += info.document_count;
    source_bytes += info.source_bytes;
  }
  TSU_CHECK(manifest.tokens == set.total_tokens() && manifest.documents == documents &&
                manifest.source_bytes == source_bytes,
            IOError, "[shards] {}: totals {} tokens / {} documents / {} source bytes differ from its shards' {} / {} / {}",
            manifest_path, manifest.tokens, manifest.documents, manifest.source_bytes, set.total_tokens(), documents,
            source_bytes);
  return set;
}

void ShardSet::read_tokens(uint64_t start, uint64_t count, int32_t* out) const {
  TSU_CHECK(start + count <= total_tokens(), IndexError, "[shards] tokens [{}, {}) outside the stream of {}", start,
            start + count, total_tokens());
  // The shard holding `start`, then onward across shard ends.
  size_t shard = std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin() - 1;
  while (count > 0) {
    const uint64_t local = start - starts_[shard];
    const uint64_t take = std::min(count, starts_[shard + 1] - start);
    shards_[shard].read_tokens(local, take, out);
    out += take;
    start += take;
    count -= take;
    ++shard;
  }
}

}  // namespace tsumugi

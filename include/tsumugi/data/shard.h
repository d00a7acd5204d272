#pragma once
/// HDF5 token shards (docs/data.md): `shard-00000.h5` files, each with `/tokens` (uint16 when the
/// vocabulary has at most 65,536 pieces, else uint32), `/doc_offsets` (uint64, documents + 1) and
/// attributes naming the format, tokenizer, counts and a checksum; `manifest.json` beside them.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tsumugi {

/// Value of a shard's `format` attribute and of the manifest's `format`.
inline constexpr const char* kShardFormat = "tsumugi-shard";
/// Version of the shard layout this library writes and reads.
inline constexpr uint32_t kShardFormatVersion = 1;

/// The attributes of one shard.
struct ShardInfo {
  std::string path;              ///< the file
  uint32_t format_version = 0;    ///< kShardFormatVersion
  std::string tokenizer_sha256;  ///< SHA-256 of the tokenizer model file
  uint64_t vocab_size = 0;       ///< pieces of that tokenizer
  int32_t eos_id = -1;           ///< every document ends with this token
  uint64_t token_count = 0;      ///< length of /tokens
  uint64_t document_count = 0;   ///< /doc_offsets has document_count + 1 entries
  uint64_t source_bytes = 0;     ///< UTF-8 bytes of the source text of these documents
  std::string checksum;          ///< "crc32:1a2b3c4d" over the bytes of /tokens then /doc_offsets
  uint32_t token_width = 2;      ///< bytes per stored token: 2 (uint16) or 4 (uint32)
};

/// One shard as listed in manifest.json.
struct ManifestShard {
  std::string file;  ///< name relative to the manifest's folder
  uint64_t tokens = 0;        ///< token_count of the shard
  uint64_t documents = 0;     ///< document_count of the shard
  uint64_t source_bytes = 0;  ///< UTF-8 bytes of its documents' text
  uint64_t file_bytes = 0;  ///< size of the file; a shorter file is reported as truncated
  std::string checksum;     ///< the shard's checksum attribute
};

/// manifest.json of one split folder.
struct ShardManifest {
  std::string split;             ///< "train" or "val"
  std::string tokenizer_sha256;  ///< every shard must have this tokenizer
  uint64_t vocab_size = 0;
  int32_t eos_id = -1;
  std::string token_dtype;       ///< "uint16" or "uint32"
  uint64_t tokens = 0;           ///< totals over the shards
  uint64_t documents = 0;
  uint64_t source_bytes = 0;
  std::vector<ManifestShard> shards;  ///< in stream order

  /// Reads `dir`/manifest.json; throws IOError naming the file and what is wrong.
  static ShardManifest load(const std::string& dir);
  /// Writes `dir`/manifest.json (through a temporary file and a rename).
  void save(const std::string& dir) const;
};

/// Writes one split folder: documents go into shards of about `shard_tokens` tokens (a document
/// is never cut; a shard closes once it holds at least that many), then manifest.json.
class ShardSetWriter {
 public:
  /// Starts a split in `dir` (created; old shard-*.h5 and manifest.json there are removed).
  ShardSetWriter(std::string dir, std::string split, std::string tokenizer_sha256, uint64_t vocab_size,
                 int32_t eos_id, uint64_t shard_tokens);
  ~ShardSetWriter();
  ShardSetWriter(const ShardSetWriter&) = delete;
  ShardSetWriter& operator=(const ShardSetWriter&) = delete;

  /// Appends one document: `tokens` must end with EOS; `source_bytes` is its text's UTF-8 size.
  void add_document(std::span<const int32_t> tokens, uint64_t source_bytes);
  /// Writes the open shard and manifest.json; returns the manifest. Call once.
  ShardManifest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A shard opened for reading: attributes checked, tokens memory-mapped. Copies share the file.
class ShardReader {
 public:
  /// Opens `path` and checks its format, sizes, offsets and (when asked) checksum and EOS
  /// endings; throws IOError "[shard] PATH: <the check that failed>".
  static ShardReader open(const std::string& path, bool verify_checksum = true);

  /// The shard's attributes.
  const ShardInfo& info() const;
  /// Tokens [start, start + count) widened to int32 into `out` (count elements).
  void read_tokens(uint64_t start, uint64_t count, int32_t* out) const;
  /// Start of each document in /tokens, plus the token count at the end. (document_count + 1)
  const std::vector<uint64_t>& doc_offsets() const;
  /// The tokens of document `index`, ending with EOS.
  std::vector<int32_t> document_tokens(uint64_t index) const;
  /// Recomputes the checksum of the stored bytes ("crc32:..."), to compare with info().checksum.
  std::string compute_checksum() const;

 private:
  struct Impl;
  explicit ShardReader(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

/// How to open a split folder.
struct ShardSetOptions {
  bool verify_checksums = true;          ///< read every byte once at open and compare checksums
  std::string expected_tokenizer_sha256; ///< when set, the shards must have this tokenizer
};

/// Every shard of one split folder, checked against manifest.json: one concatenated token stream.
class ShardSet {
 public:
  /// Opens `dir` (holding manifest.json); throws IOError naming the file and the failed check.
  static ShardSet open(const std::string& dir, const ShardSetOptions& options = {});

  /// The split's manifest.json.
  const ShardManifest& manifest() const { return manifest_; }
  /// The opened shards, in stream order.
  const std::vector<ShardReader>& shards() const { return shards_; }
  /// Tokens in all shards together.
  uint64_t total_tokens() const { return starts_.back(); }
  /// Tokens [start, start + count) of the concatenated stream (across shard ends), as int32.
  void read_tokens(uint64_t start, uint64_t count, int32_t* out) const;

 private:
  ShardManifest manifest_;
  std::vector<ShardReader> shards_;
  std::vector<uint64_t> starts_{0};  // first stream position of each shard, then the total
};

}  // namespace tsumugi

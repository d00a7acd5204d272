#pragma once
/// Tokenizer: a trained SentencePiece model (loaded from a `.model` file) that turns UTF-8 text
/// into token ids and back, and counts the UTF-8 bytes that any token sequence stands for.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tsumugi {

/// A loaded SentencePiece model. Copies share the model; encode and decode are thread-safe.
class Tokenizer {
 public:
  /// Loads a SentencePiece model file; throws IOError naming the file when it cannot.
  static Tokenizer load(const std::string& model_path);
  /// Loads a model from the bytes of a `.model` file (`name` is used in error messages).
  static Tokenizer from_bytes(std::string model_bytes, const std::string& name = "<memory>");

  /// Token ids of `text` (any UTF-8; lossless for tsumugi-trained models). No BOS or EOS added.
  std::vector<int32_t> encode(std::string_view text) const;
  /// Appends the ids of `text` to `ids` (reuses the caller's buffer in hot loops).
  void encode_append(std::string_view text, std::vector<int32_t>& ids) const;
  /// The text of `ids` (control tokens such as EOS decode to nothing).
  std::string decode(std::span<const int32_t> ids) const;
  /// Surface pieces of `text`, e.g. {"▁東京", "都", "<0xF0>", ...}, for quick checks.
  std::vector<std::string> encode_pieces(std::string_view text) const;

  /// Number of pieces (ids are 0 .. vocab_size - 1).
  int32_t vocab_size() const;
  /// Id of the end-of-document token `</s>` (appended after each document in shards).
  int32_t eos_id() const;
  /// Id of `<s>`, or -1 when the model has none.
  int32_t bos_id() const;
  /// Id of `<unk>`.
  int32_t unk_id() const;
  /// The piece string of `id` ("▁" marks a space, "<0xE3>" a byte).
  const std::string& piece(int32_t id) const;
  /// True when `id` is a byte-fallback piece such as <0xE3>.
  bool is_byte(int32_t id) const;
  /// True when `id` is a control piece (<s>, </s>, <pad>).
  bool is_control(int32_t id) const;

  /// UTF-8 bytes each id decodes to: byte pieces 1, control 0, "▁" counts 1 (a space). (vocab_size)
  const std::vector<uint32_t>& token_bytes() const;
  /// UTF-8 bytes of the text that `ids` stand for (sum of token_bytes), for bits per byte.
  uint64_t byte_count(std::span<const int32_t> ids) const;

  /// SHA-256 of the model file's bytes, 64 lowercase hex digits: the tokenizer's identity.
  const std::string& sha256() const;
  /// The bytes of the model file (to copy it beside a corpus).
  const std::string& model_bytes() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

/// SHA-256 of `bytes` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

}  // namespace tsumugi

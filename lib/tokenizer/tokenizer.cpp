// Tokenizer: SentencePiece encoding and decoding behind a header that does not expose it.
#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <tsumugi/tokenizer/tokenizer.h>

#include "core/check.h"

namespace tsumugi {

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
  std::string model_bytes;
  std::string sha256;
  std::vector<uint32_t> token_bytes;  // (vocab_size)
  std::string name;
};

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // "▁", SentencePiece's space

// Source bytes of one piece: "▁" stands for one space byte; everything else is its UTF-8.
uint32_t piece_bytes(std::string_view piece) {
  uint32_t bytes = 0;
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) {
      bytes += 1;
      i += kSpaceSymbol.size();
    } else {
      bytes += 1;
      i += 1;
    }
  }
  return bytes;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::load(const std::string& model_path) {
  // The path may come from a recipe inside someone else's checkpoint: read only a regular file of
  // a model's size, never a device, a FIFO or a folder (which would block or never end).
  constexpr uintmax_t kMaxModelBytes = uintmax_t{1} << 30;
  std::error_code error;
  TSU_CHECK(std::filesystem::is_regular_file(model_path, error), IOError,
            "[tokenizer] {}: cannot open the SentencePiece model (not a regular file)", model_path);
  const uintmax_t size = std::filesystem::file_size(model_path, error);
  TSU_CHECK(!error && size <= kMaxModelBytes, IOError, "[tokenizer] {}: {} bytes is not the size of a SentencePiece model",
            model_path, size);
  std::ifstream file(model_path, std::ios::binary);
  TSU_CHECK(file.good(), IOError, "[tokenizer] {}: cannot open the SentencePiece model", model_path);
  std::stringstream bytes;
  bytes << file.rdbuf();
  return from_bytes(std::move(bytes).str(), model_path);
}

Tokenizer Tokenizer::from_bytes(std::string model_bytes, const std::string& name) {
  auto impl = std::make_shared<Impl>();
  sentencepiece::util::Status status;
  try {
    status = impl->processor.LoadFromSerializedProto(model_bytes);
  } catch (const std::exception& e) {
    // SentencePiece reports most flaws in a status, but some (an empty piece) as an exception.
    TSU_FAIL(IOError, "[tokenizer] {}: not a SentencePiece model: {}", name, e.what());
  }
  TSU_CHECK(status.ok(), IOError, "[tokenizer] {}: not a SentencePiece model: {}", name, status.ToString());
  TSU_CHECK(impl->processor.eos_id() >= 0, ValueError, "[tokenizer] {}: the model has no </s> (EOS) piece", name);
  impl->sha256 = sha256_hex(model_bytes);
  impl->model_bytes = std::move(model_bytes);
  impl->name = name;
  const int vocab = impl->processor.GetPieceSize();
  impl->token_bytes.resize(vocab);
  for (int id = 0; id < vocab; ++id) {
    if (impl->processor.IsControl(id)) {
      impl->token_bytes[id] = 0;
    } else if (impl->processor.IsByte(id)) {
      impl->token_bytes[id] = 1;
    } else if (impl->processor.IsUnknown(id)) {
      impl->token_bytes[id] = static_cast<uint32_t>(impl->processor.DecodeIds({id}).size());
    } else {
      impl->token_bytes[id] = piece_bytes(impl->processor.IdToPiece(id));
    }
  }
  return Tokenizer(std::move(impl));
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& ids) const {
  thread_local std::vector<int> piece_ids;
  const auto status = impl_->processor.Encode(absl::string_view(text.data(), text.size()), &piece_ids);
  TSU_CHECK(status.ok(), ValueError, "[tokenizer] encode failed: {}", status.ToString());
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  encode_append(text, ids);
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int vocab = vocab_size();
  std::vector<int> piece_ids(ids.begin(), ids.end());
  for (int id : piece_ids) {
    TSU_CHECK(id >= 0 && id < vocab, IndexError, "[tokenizer] decode: id {} outside the vocabulary [0, {})", id, vocab);
  }
  std::string text;
  const auto status = impl_->processor.Decode(piece_ids, &text);
  TSU_CHECK(status.ok(), ValueError, "[tokenizer] decode failed: {}", status.ToString());
  return text;
}

std::vector<std::string> Tokenizer::encode_pieces(std::string_view text) const {
  std::vector<std::string> pieces;
  const auto status = impl_->processor.Encode(absl::string_view(text.data(), text.size()), &pieces);
  TSU_CHECK(status.ok(), ValueError, "[tokenizer] encode failed: {}", status.ToString());
  return pieces;
}

int32_t Tokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
int32_t Tokenizer::eos_id() const { return impl_->processor.eos_id(); }
int32_t Tokenizer::bos_id() const { return impl_->processor.bos_id(); }
int32_t Tokenizer::unk_id() const { return impl_->processor.unk_id(); }

const std::string& Tokenizer::piece(int32_t id) const {
  TSU_CHECK(id >= 0 && id < vocab_size(), IndexError, "[tokenizer] piece: id {} outside the vocabulary [0, {})", id,
            vocab_size());
  return impl_->processor.IdToPiece(id);
}

bool Tokenizer::is_byte(int32_t id) const { return impl_->processor.IsByte(id); }
bool Tokenizer::is_control(int32_t id) const { return impl_->processor.IsControl(id); }

const std::vector<uint32_t>& Tokenizer::token_bytes() const { return impl_->token_bytes; }

uint64_t Tokenizer::byte_count(std::span<const int32_t> ids) const {
  const auto& bytes = impl_->token_bytes;
  uint64_t total = 0;
  for (int32_t id : ids) {
    TSU_CHECK(id >= 0 && static_cast<size_t>(id) < bytes.size(), IndexError,
              "[tokenizer] byte_count: id {} outside the vocabulary [0, {})", id, bytes.size());
    total += bytes[id];
  }
  return total;
}

const std::string& Tokenizer::sha256() const { return impl_->sha256; }
const std::string& Tokenizer::model_bytes() const { return impl_->model_bytes; }

}  // namespace tsumugi

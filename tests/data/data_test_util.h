#pragma once
// Test helpers for the data pipeline: corpus files in every supported form, and reading
// documents back out of shards.
#include <tsumugi/data/shard.h>
#include <tsumugi/tokenizer/tokenizer.h>

#include <zlib.h>
#include <zstd.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokenizer/tiny_tokenizer.h"

namespace tsumugi::testing {

/// Writes `content` to `path`, gzip- or zstd-compressed when the name ends in .gz or .zst.
inline void write_file(const std::string& path, const std::string& content) {
  if (path.ends_with(".gz")) {
    gzFile file = gzopen(path.c_str(), "wb");
    if (!file || gzwrite(file, content.data(), static_cast<unsigned>(content.size())) != static_cast<int>(content.size())) {
      throw std::runtime_error("gzwrite " + path);
    }
    gzclose(file);
    return;
  }
  std::string bytes = content;
  if (path.ends_with(".zst")) {
    bytes.resize(ZSTD_compressBound(content.size()));
    bytes.resize(ZSTD_compress(bytes.data(), bytes.size(), content.data(), content.size(), 3));
  }
  std::ofstream(path, std::ios::binary) << bytes;
}

/// Escapes `text` as a JSON string literal.
inline std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

/// JSON lines {"id": i, "text": doc} for each document.
inline std::string jsonl_of(const std::vector<std::string>& documents) {
  std::string out;
  for (size_t i = 0; i < documents.size(); ++i) {
    out += "{\"id\": " + std::to_string(i) + ", \"text\": " + json_string(documents[i]) + "}\n";
  }
  return out;
}

/// Documents separated by blank lines (documents must not hold blank lines themselves).
inline std::string txt_of(const std::vector<std::string>& documents) {
  std::string out;
  for (const auto& document : documents) out += document + "\n\n";
  return out;
}

/// Every document of every shard in a split, decoded (the EOS that ends each is checked, then dropped).
inline std::vector<std::string> decode_split(const ShardSet& set, const Tokenizer& tokenizer) {
  std::vector<std::string> out;
  for (const auto& shard : set.shards()) {
    for (uint64_t d = 0; d < shard.info().document_count; ++d) {
      auto tokens = shard.document_tokens(d);
      if (tokens.empty() || tokens.back() != tokenizer.eos_id()) throw std::runtime_error("document without EOS");
      tokens.pop_back();
      out.push_back(tokenizer.decode(tokens));
    }
  }
  return out;
}

/// The bytes of a file.
inline std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

}  // namespace tsumugi::testing

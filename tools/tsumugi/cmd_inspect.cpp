// tsumugi inspect PATH: what a prep output, split folder or shard holds, checked, with samples.
#include <tsumugi/core/error.h>
#include <tsumugi/data/shard.h>
#include <tsumugi/tokenizer/tokenizer.h>

#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "data_commands.h"

namespace tsumugi::cli {
namespace {

namespace fs = std::filesystem;

struct InspectCommand {
  std::string path;
  std::string tokenizer;
  int samples = 3;
  int sample_chars = 160;
  bool no_verify = false;
};

// The tokenizer beside a prep output: PATH/tokenizer.model, or one or two folders up.
std::optional<Tokenizer> find_tokenizer(const InspectCommand& command) {
  if (!command.tokenizer.empty()) return Tokenizer::load(command.tokenizer);
  fs::path dir = fs::is_directory(command.path) ? fs::path(command.path) : fs::path(command.path).parent_path();
  for (int up = 0; up < 3 && !dir.empty(); ++up, dir = dir.parent_path()) {
    if (fs::exists(dir / "tokenizer.model")) return Tokenizer::load((dir / "tokenizer.model").string());
  }
  return std::nullopt;
}

// The first `chars` characters of `text` on one line.
std::string preview(const std::string& text, int chars) {
  std::string out;
  int count = 0;
  for (size_t i = 0; i < text.size() && count < chars; ++count) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    const std::string_view character(text.data() + i, std::min(length, text.size() - i));
    out += character == "\n" ? std::string("⏎") : std::string(character);
    i += length;
  }
  return count == chars ? out + "…" : out;
}

void print_samples(const ShardReader& shard, const std::optional<Tokenizer>& tokenizer, const InspectCommand& command) {
  if (!tokenizer || command.samples <= 0) return;
  const uint64_t documents = shard.info().document_count;
  for (int s = 0; s < command.samples && static_cast<uint64_t>(s) < documents; ++s) {
    // Spread the samples over the shard.
    const uint64_t index = documents * static_cast<uint64_t>(s) / static_cast<uint64_t>(command.samples);
    const auto tokens = shard.document_tokens(index);
    fmt::print("    doc {} ({} tokens): {}\n", index, tokens.size(),
               preview(tokenizer->decode(tokens), command.sample_chars));
  }
}

void print_shard_line(const ShardReader& shard, bool verified) {
  const ShardInfo& info = shard.info();
  fmt::print("  {}  {} tokens  {} documents  {}  {} {}\n", fs::path(info.path).filename().string(),
             with_commas(info.token_count), with_commas(info.document_count),
             human_bytes(static_cast<double>(info.source_bytes)), info.checksum, verified ? "verified" : "(not verified)");
}

void inspect_split(const fs::path& dir, const std::optional<Tokenizer>& tokenizer, const InspectCommand& command) {
  const ShardSet set = ShardSet::open(dir.string(), {.verify_checksums = !command.no_verify, .expected_tokenizer_sha256 = {}});
  const ShardManifest& m = set.manifest();
  fmt::print("{} ({} split): {} shards, {} tokens, {} documents, {} of text, {:.2f} bytes/token\n", dir.string(),
             m.split, m.shards.size(), with_commas(m.tokens), with_commas(m.documents),
             human_bytes(static_cast<double>(m.source_bytes)),
             m.tokens ? static_cast<double>(m.source_bytes) / static_cast<double>(m.tokens) : 0.0);
  fmt::print("  tokenizer sha256 {}  vocab {}  eos {}  tokens {}\n", m.tokenizer_sha256, m.vocab_size, m.eos_id,
             m.token_dtype);
  if (tokenizer) {
    fmt::print("  tokenizer model: {}\n", tokenizer->sha256() == m.tokenizer_sha256
                                              ? "matches"
                                              : "DIFFERS (samples below are decoded with the wrong tokenizer)");
  }
  for (const auto& shard : set.shards()) print_shard_line(shard, !command.no_verify);
  if (!set.shards().empty()) print_samples(set.shards().front(), tokenizer, command);
}

void run_inspect(const InspectCommand& command) {
  const fs::path path(command.path);
  if (!fs::exists(path)) throw IOError(fmt::format("[inspect] {}: no such file or folder", command.path));
  const auto tokenizer = find_tokenizer(command);
  if (!tokenizer) fmt::print("(no tokenizer.model found: pass --tokenizer to see decoded samples)\n");
  if (fs::is_regular_file(path)) {
    const ShardReader shard = ShardReader::open(path.string(), !command.no_verify);
    const ShardInfo& info = shard.info();
    fmt::print("{}: format version {}, tokenizer sha256 {}, vocab {}, eos {}, {}-byte tokens\n", path.string(),
               info.format_version, info.tokenizer_sha256, info.vocab_size, info.eos_id, info.token_width);
    print_shard_line(shard, !command.no_verify);
    print_samples(shard, tokenizer, command);
    return;
  }
  if (fs::exists(path / "manifest.json")) {
    inspect_split(path, tokenizer, command);
    return;
  }
  bool found = false;
  for (const char* split : {"train", "val"}) {
    if (fs::exists(path / split / "manifest.json")) {
      inspect_split(path / split, tokenizer, command);
      found = true;
    }
  }
  if (!found) throw IOError(fmt::format("[inspect] {}: no manifest.json here or in train/ or val/", command.path));
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto command = std::make_shared<InspectCommand>();
  CLI::App* inspect = app.add_subcommand("inspect", "Show and check shards: counts, tokenizer, checksums, samples");
  inspect->add_option("path", command->path, "A prep output folder, a split folder, or one shard file")->required();
  inspect->add_option("--tokenizer", command->tokenizer, "Model to decode samples (default: tokenizer.model nearby)");
  inspect->add_option("--samples", command->samples, "Decoded documents to show per split")->capture_default_str();
  inspect->add_option("--chars", command->sample_chars, "Characters shown per sample")->capture_default_str();
  inspect->add_flag("--no-verify", command->no_verify, "Skip reading every byte to verify checksums");
  inspect->callback([command] { run_inspect(*command); });
}

}  // namespace tsumugi::cli

#pragma once
// Helpers shared by the fuzzers of tests/fuzz: a scratch folder per process, writing the input to
// a file for APIs that only take a path, and the one rule of every fuzzer: tsumugi::Error is the
// expected answer to bad input; anything else (a crash, a sanitizer report, another exception,
// a hang, an allocation past libFuzzer's limit) is a bug.
#include <tsumugi/core/error.h>
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/data/shard.h>
#include <tsumugi/tokenizer/tokenizer.h>
#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/config.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace tsumugi::fuzz {

/// A folder under $TMPDIR for this process, removed at exit; the same folder for every input.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "tsumugi-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_dir(), ignored);
    });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

/// Writes `bytes` to `path` (replacing it); aborts if the file system fails (not an input bug).
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size() || std::fclose(file) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `parse`; a tsumugi::Error is the expected rejection of bad input and is swallowed.
template <class F>
void expect_only_tsumugi_errors(F&& parse) {
  try {
    parse();
  } catch (const tsumugi::Error&) {
    // Bad input, reported as the library promises.
  }
}

/// Writes a split folder of two small uint16 shards and its manifest.json into `dir` with
/// ShardSetWriter (tokenizer SHA-256 "aaa...a", vocab 300, EOS 2); the same bytes every time.
inline void write_shard_fixture(const std::string& dir, uint64_t vocab_size = 300) {
  ShardSetWriter writer(dir, "train", std::string(64, 'a'), vocab_size, 2, 16);
  for (int doc = 0; doc < 6; ++doc) {
    std::vector<int32_t> tokens;
    for (int t = 0; t < 5 + doc; ++t) tokens.push_back(3 + static_cast<int32_t>((doc * 7919 + t * 104729) % (vocab_size - 3)));
    tokens.push_back(2);
    writer.add_document(tokens, tokens.size() * 3);
  }
  writer.finish();
}

/// The tokenizer model kept as a seed of fuzz_tokenizer (trained by make_seeds).
inline std::string seed_tokenizer_path() {
  return std::string(TSUMUGI_SOURCE_DIR) + "/tests/fuzz/corpus/fuzz_tokenizer/tiny.model";
}

/// Writes, inside `root`, what fuzz_checkpoint needs: the tokenizer `tok/tiny.model` and the run
/// `run/` with one checkpoint of a tiny GPT-2 at step 7, saved by CheckpointManager. Returns the
/// checkpoint's trainer.json as saved; its recipe names the tokenizer relatively ("tok/tiny.model"),
/// so that the same bytes work from any folder made this way. Deterministic: the seeds that
/// make_seeds writes and the files the fuzzer writes agree on every size and checksum.
inline std::string write_checkpoint_fixture(const std::filesystem::path& root) {
  std::filesystem::create_directories(root / "tok");
  std::filesystem::copy_file(seed_tokenizer_path(), root / "tok/tiny.model",
                             std::filesystem::copy_options::overwrite_existing);
  const Tokenizer tokenizer = Tokenizer::load((root / "tok/tiny.model").string());
  TrainConfig recipe;
  recipe.model.arch = Arch::gpt2;
  recipe.model.layers = 1;
  recipe.model.heads = 2;
  recipe.model.dim = 8;
  recipe.model.context = 16;
  recipe.model.vocab = tokenizer.vocab_size();
  recipe.data.tokenizer = "tok/tiny.model";
  recipe.data.seq_len = 16;
  auto model = make_model(recipe.model);
  model->init_weights(1);
  StateDict optimizer;
  for (const auto& [name, tensor] : model->state_dict()) optimizer["exp_avg." + name] = tensor.detach().clone();
  const nlohmann::json state = {{"step", 7},
                                {"samples_consumed", 7 * 32},
                                {"data_seed", 1234},
                                {"dropout_offset", 0},
                                {"loss", 5.5},
                                {"tokenizer_sha256", tokenizer.sha256()},
                                {"layout", {{"world", 1}, {"dp", 1}, {"pp", 1}, {"micro_batch", 8}}},
                                {"config", config_to_toml(recipe)}};
  const std::string dir = CheckpointManager((root / "run").string(), 2).save(7, model->state_dict(), optimizer, state.dump());
  std::ifstream in(dir + "/trainer.json", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace tsumugi::fuzz

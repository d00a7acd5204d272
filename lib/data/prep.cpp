// Prep: blocks of documents -> tokens -> train/val shards, in one process or across ranks.
#include <tsumugi/data/prep.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

#include "atomic_file.h"
#include "core/check.h"
#include "prep_blocks.h"
#include "text_util.h"

namespace tsumugi {

using data_internal::EncodedBlock;
using data_internal::EncodedSplit;

bool is_validation_document(std::string_view text, double val_fraction) {
  const double unit = static_cast<double>(data_internal::stable_hash64(text) >> 11) * 0x1.0p-53;  // [0, 1)
  return unit < val_fraction;
}

namespace {

namespace fs = std::filesystem;

void check_options(const PrepOptions& options) {
  TSU_CHECK(!options.inputs.empty(), ValueError, "[prep] no input files");
  TSU_CHECK(!options.out_dir.empty(), ValueError, "[prep] no output folder");
  TSU_CHECK(options.val_fraction >= 0 && options.val_fraction < 1, ValueError,
            "[prep] val_fraction {} outside [0, 1)", options.val_fraction);
  TSU_CHECK(options.block_bytes > 0, ValueError, "[prep] block_bytes must be positive");
}

// Consumes encoded blocks in order: documents into the train and val shard writers.
class BlockSink {
 public:
  BlockSink(const PrepOptions& options, const Tokenizer& tokenizer)
      : options_(options),
        tokenizer_(tokenizer),
        train_((fs::path(options.out_dir) / "train").string(), "train", tokenizer.sha256(), tokenizer.vocab_size(),
               tokenizer.eos_id(), options.shard_tokens),
        val_((fs::path(options.out_dir) / "val").string(), "val", tokenizer.sha256(), tokenizer.vocab_size(),
             tokenizer.eos_id(), options.shard_tokens),
        start_(std::chrono::steady_clock::now()) {}

  void consume(EncodedBlock&& block) {
    if (block.fatal) {
      TSU_FAIL(IOError, "[prep] {} (stopping: on-invalid is stop; use skip to leave such records out)",
               block.problems.back().message());
    }
    summary_.skipped.insert(summary_.skipped.end(), block.problems.begin(), block.problems.end());
    add(block.train, train_);
    add(block.val, val_);
    ++summary_.blocks;
    progress_.input_bytes_done = block.input_position;
    progress_.text_bytes += block.text_bytes;
    progress_.documents += block.documents;
    progress_.tokens += block.train.tokens.size() + block.val.tokens.size();
    progress_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (options_.progress) options_.progress(progress_);
  }

  void set_input_total(uint64_t bytes) { progress_.input_bytes_total = bytes; }

  PrepSummary finish() {
    const auto summarize = [](const ShardManifest& manifest) {
      return SplitSummary{manifest.shards.size(), manifest.documents, manifest.tokens, manifest.source_bytes};
    };
    // The tokenizer first, the manifests (each split's mark of completeness) last.
    data_internal::write_file_atomically((fs::path(options_.out_dir) / "tokenizer.model").string(),
                                         tokenizer_.model_bytes(), "prep");
    summary_.train = summarize(train_.finish());
    summary_.val = summarize(val_.finish());
    summary_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return summary_;
  }

 private:
  static void add(const EncodedSplit& split, ShardSetWriter& writer) {
    uint64_t begin = 0;
    for (size_t d = 0; d < split.doc_ends.size(); ++d) {
      const uint64_t end = split.doc_ends[d];
      writer.add_document(std::span(split.tokens).subspan(begin, end - begin), split.doc_bytes[d]);
      begin = end;
    }
  }

  const PrepOptions& options_;
  const Tokenizer& tokenizer_;
  ShardSetWriter train_, val_;
  PrepSummary summary_;
  PrepProgress progress_;
  std::chrono::steady_clock::time_point start_;
};

uint64_t total_input_bytes(const std::vector<std::string>& files) {
  uint64_t total = 0;
  for (const auto& file : files) {
    std::error_code error;
    total += fs::file_size(file, error);
  }
  return total;
}

std::string part_path(const PrepOptions& options, int rank) {
  return (fs::path(options.out_dir) / ".parts" / fmt::format("part-{:05d}.bin", rank)).string();
}

}  // namespace

PrepSummary prepare_shards(const PrepOptions& options) {
  check_options(options);
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer_path);
  BlockSink sink(options, tokenizer);
  sink.set_input_total(total_input_bytes(options.inputs));
  data_internal::run_block_pipeline(options, tokenizer, 0, 1, [&](EncodedBlock&& block) { sink.consume(std::move(block)); });
  return sink.finish();
}

void prepare_shard_part(const PrepOptions& options, int rank, int world) {
  check_options(options);
  TSU_CHECK(world >= 1 && rank >= 0 && rank < world, ValueError, "[prep] rank {} outside [0, world {})", rank, world);
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer_path);
  const std::string path = part_path(options, rank);
  fs::create_directories(fs::path(path).parent_path());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "wb"), std::fclose);
  TSU_CHECK(file != nullptr, IOError, "[prep] {}: cannot create: {}", path, std::strerror(errno));
  PrepProgress progress;
  progress.input_bytes_total = total_input_bytes(options.inputs);
  const auto start = std::chrono::steady_clock::now();
  data_internal::run_block_pipeline(options, tokenizer, rank, world, [&](EncodedBlock&& block) {
    data_internal::write_block(file.get(), block, path);
    if (!options.progress) return;
    progress.input_bytes_done = block.input_position;
    progress.text_bytes += block.text_bytes;
    progress.documents += block.documents;
    progress.tokens += block.train.tokens.size() + block.val.tokens.size();
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    options.progress(progress);
  });
  TSU_CHECK(std::fflush(file.get()) == 0, IOError, "[prep] {}: cannot write", path);
}

PrepSummary merge_shard_parts(const PrepOptions& options, int world) {
  check_options(options);
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer_path);
  std::vector<std::unique_ptr<std::FILE, int (*)(std::FILE*)>> parts;
  for (int rank = 0; rank < world; ++rank) {
    const std::string path = part_path(options, rank);
    parts.emplace_back(std::fopen(path.c_str(), "rb"), std::fclose);
    TSU_CHECK(parts.back() != nullptr, IOError, "[prep] {}: missing part of rank {} (did every rank finish?)", path,
              rank);
  }
  PrepOptions quiet = options;
  quiet.progress = nullptr;  // merging is fast; the ranks reported progress while encoding
  BlockSink sink(quiet, tokenizer);
  // Block b sits in part b % world, and each part holds its blocks in increasing order.
  for (uint64_t index = 0;; ++index) {
    const int rank = static_cast<int>(index % static_cast<uint64_t>(world));
    EncodedBlock block;
    if (!data_internal::read_block(parts[rank].get(), block, part_path(options, rank))) break;
    TSU_CHECK(block.index == index, IOError, "[prep] {}: holds block {} where block {} belongs",
              part_path(options, rank), block.index, index);
    sink.consume(std::move(block));
  }
  for (int rank = 0; rank < world; ++rank) {
    TSU_CHECK(std::fgetc(parts[rank].get()) == EOF, IOError, "[prep] {}: blocks left over after the merge",
              part_path(options, rank));
  }
  parts.clear();
  PrepSummary summary = sink.finish();
  fs::remove_all(fs::path(options.out_dir) / ".parts");
  return summary;
}

}  // namespace tsumugi

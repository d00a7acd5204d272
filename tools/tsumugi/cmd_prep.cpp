// tsumugi prep: corpus files -> HDF5 token shards, on all cores, and on all ranks under mpirun.
#include <tsumugi/core/error.h>
#include <tsumugi/data/documents.h>
#include <tsumugi/data/prep.h>
#include <tsumugi/dist/process_group.h>

#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "data_commands.h"


namespace tsumugi::cli {
namespace {

struct PrepCommand {
  PrepOptions options;
  std::vector<std::string> inputs;
  std::string on_invalid = "stop";
  double block_mb = 1.0;
};

void print_summary(const PrepSummary& summary, const PrepOptions& options, int world) {
  const auto split = [](const char* name, const SplitSummary& s) {
    fmt::print("  {:<5} {} shards, {} documents, {} tokens, {} of text ({:.2f} bytes/token)\n", name, s.shards,
               with_commas(s.documents), with_commas(s.tokens), human_bytes(static_cast<double>(s.source_bytes)),
               s.tokens ? static_cast<double>(s.source_bytes) / static_cast<double>(s.tokens) : 0.0);
  };
  fmt::print("prep: {} ({} blocks, {} rank{}, {:.1f} s)\n", options.out_dir, summary.blocks, world, world > 1 ? "s" : "",
             summary.seconds);
  split("train", summary.train);
  split("val", summary.val);
  if (!summary.skipped.empty()) {
    fmt::print("  skipped {} records:\n", summary.skipped.size());
    for (size_t i = 0; i < summary.skipped.size() && i < 20; ++i) {
      fmt::print("    {}\n", summary.skipped[i].message());
    }
    if (summary.skipped.size() > 20) fmt::print("    ... and {} more\n", summary.skipped.size() - 20);
  }
}

void run_prep(PrepCommand& command) {
  PrepOptions& options = command.options;
  options.inputs = expand_input_paths(command.inputs);
  options.block_bytes = static_cast<uint64_t>(command.block_mb * (1 << 20));
  if (command.on_invalid == "skip") {
    options.on_invalid = OnInvalid::skip;
  } else if (command.on_invalid == "stop") {
    options.on_invalid = OnInvalid::stop;
  } else {
    throw ValueError(fmt::format("[prep] --on-invalid {} is neither skip nor stop", command.on_invalid));
  }
  // Under mpirun every rank encodes its share of the blocks; rank 0 merges them. An error on any
  // rank propagates to main, which ends the whole job so that no rank waits in a barrier.
  const std::shared_ptr<ProcessGroup> group = default_group();
  const int rank = group->rank(), world = group->size();
  const auto start = std::chrono::steady_clock::now();
  auto bar = std::make_shared<ProgressBar>(world > 1 ? "prep (rank 0)" : "prep");
  if (rank == 0) {
    options.progress = [bar](const PrepProgress& p) {
      bar->update(static_cast<double>(p.input_bytes_done), static_cast<double>(p.input_bytes_total),
                  p.seconds > 0 ? static_cast<double>(p.text_bytes) / p.seconds : 0.0,
                  p.input_bytes_done == p.input_bytes_total);
    };
  }
  if (world == 1) {
    const PrepSummary summary = prepare_shards(options);
    bar->finish();
    print_summary(summary, options, 1);
    return;
  }
  prepare_shard_part(options, rank, world);
  group->barrier();
  if (rank == 0) {
    bar->finish();
    PrepSummary summary = merge_shard_parts(options, world);
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    print_summary(summary, options, world);
  }
  group->barrier();
}

}  // namespace

void add_prep_command(CLI::App& app) {
  auto command = std::make_shared<PrepCommand>();
  PrepOptions& o = command->options;
  CLI::App* prep = app.add_subcommand(
      "prep", "Tokenize .jsonl/.txt (optionally .gz/.zst) files into HDF5 shards with a validation split");
  prep->add_option("inputs", command->inputs, "Corpus files or folders")->required();
  prep->add_option("--tokenizer", o.tokenizer_path, "SentencePiece model (tsumugi tokenizer train)")->required();
  prep->add_option("--out", o.out_dir, "Output folder: train/, val/, tokenizer.model")->required();
  prep->add_option("--text-field", o.text_field, "JSON field holding the text")->capture_default_str();
  prep->add_option("--val-fraction", o.val_fraction, "Share of documents in the validation split")
      ->capture_default_str();
  prep->add_option("--shard-tokens", o.shard_tokens, "Tokens per shard (a shard closes at the first document end past it)")
      ->capture_default_str();
  prep->add_option("--threads", o.threads, "Encoder threads per process (default: all cores)");
  prep->add_option("--on-invalid", command->on_invalid,
                   "A record with invalid UTF-8 or bad JSON: stop (error naming file and line) or skip (report it)")
      ->capture_default_str();
  prep->add_option("--block-mb", command->block_mb, "Input per unit of work, MiB")->capture_default_str();
  prep->callback([command] { run_prep(*command); });
}

}  // namespace tsumugi::cli

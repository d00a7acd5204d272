// tsumugi prep: corpus files -> HDF5 token shards, on all cores, and on all ranks under mpirun.
#include <tsumugi/core/error.h>
#include <tsumugi/data/documents.h>
#include <tsumugi/data/prep.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <memory>

#include "data_commands.h"

#ifdef TSUMUGI_WITH_MPI
#include <mpi.h>
#endif

namespace tsumugi::cli {
namespace {

struct PrepCommand {
  PrepOptions options;
  std::vector<std::string> inputs;
  std::string on_invalid = "stop";
  double block_mb = 1.0;
};

// MPI for prep: started only when mpirun launched us, so that a plain run needs no MPI runtime.
class MpiSession {
 public:
  MpiSession() {
#ifdef TSUMUGI_WITH_MPI
    const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
    if (!launched) return;
    MPI_Init(nullptr, nullptr);
    active_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
#endif
  }
  ~MpiSession() {
#ifdef TSUMUGI_WITH_MPI
    if (active_) MPI_Finalize();
#endif
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int world() const { return world_; }
  void barrier() {
#ifdef TSUMUGI_WITH_MPI
    if (active_) MPI_Barrier(MPI_COMM_WORLD);
#endif
  }
  // A failing rank takes the whole job down, so that no other rank waits forever in a barrier.
  [[noreturn]] void abort_job(const std::string& message) {
    std::fprintf(stderr, "tsumugi: error (rank %d): %s\n", rank_, message.c_str());
#ifdef TSUMUGI_WITH_MPI
    if (active_) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    std::exit(1);
  }

 private:
  bool active_ = false;
  int rank_ = 0;
  int world_ = 1;
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
  MpiSession mpi;
  const auto start = std::chrono::steady_clock::now();
  auto bar = std::make_shared<ProgressBar>(mpi.world() > 1 ? "prep (rank 0)" : "prep");
  if (mpi.rank() == 0) {
    options.progress = [bar](const PrepProgress& p) {
      bar->update(static_cast<double>(p.input_bytes_done), static_cast<double>(p.input_bytes_total),
                  p.seconds > 0 ? static_cast<double>(p.text_bytes) / p.seconds : 0.0,
                  p.input_bytes_done == p.input_bytes_total);
    };
  }
  if (mpi.world() == 1) {
    const PrepSummary summary = prepare_shards(options);
    bar->finish();
    print_summary(summary, options, 1);
    return;
  }
  try {
    prepare_shard_part(options, mpi.rank(), mpi.world());
  } catch (const Error& e) {
    mpi.abort_job(e.what());
  }
  mpi.barrier();
  if (mpi.rank() == 0) {
    bar->finish();
    try {
      PrepSummary summary = merge_shard_parts(options, mpi.world());
      summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      print_summary(summary, options, mpi.world());
    } catch (const Error& e) {
      mpi.abort_job(e.what());
    }
  }
  mpi.barrier();
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

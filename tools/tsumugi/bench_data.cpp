// tsumugi bench data: prep against SentencePiece's own spm_encode on the same text and thread
// count, side by side in one run; then the loader's tokens per second to one rank.
//
// The text is cut into N part files (N = threads) at document ends. spm_encode is single-threaded,
// so N spm_encode processes encode the N parts at once; prep runs on the same N files with N
// encoder threads and writes finished shards. Runs alternate (spm, prep, spm, prep, ...) after a
// warm-up of each, so that noise from other work on the machine falls on both.
#include <tsumugi/data/documents.h>
#include <tsumugi/data/loader.h>
#include <tsumugi/data/prep.h>

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include <tsumugi/core/error.h>

#include "bench_util.h"
#include "data_commands.h"

extern char** environ;

namespace tsumugi::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BenchDataCommand {
  std::string corpus;
  std::string tokenizer;
  std::string text_field = "text";
  std::string work_dir;
  int threads = 0;
  int repeats = 5;
  int64_t seq_len = 1024;
  int64_t batch = 8;
  int loader_batches = 3000;
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Writes the corpus as `parts` .txt files of about equal size, cut at document ends. Blank lines
// inside a document are dropped so that a blank line always separates documents.
std::vector<std::string> write_text_parts(const BenchDataCommand& command, int parts, uint64_t& bytes) {
  DocumentReader reader(expand_input_paths({command.corpus}), {.text_field = command.text_field});
  std::vector<std::string> documents;
  Document document;
  bytes = 0;
  while (reader.next(document)) {
    std::string text;
    for (size_t i = 0; i < document.text.size(); ++i) {
      if (document.text[i] == '\n' && (text.empty() || text.back() == '\n')) continue;
      text += document.text[i];
    }
    while (!text.empty() && text.back() == '\n') text.pop_back();
    if (text.empty()) continue;
    bytes += text.size() + 2;
    documents.push_back(std::move(text));
  }
  std::vector<std::string> paths;
  size_t next = 0;
  uint64_t written = 0;
  for (int p = 0; p < parts; ++p) {
    paths.push_back((fs::path(command.work_dir) / fmt::format("part-{}.txt", p)).string());
    std::ofstream out(paths.back(), std::ios::binary);
    const uint64_t target = bytes * static_cast<uint64_t>(p + 1) / static_cast<uint64_t>(parts);
    while (next < documents.size() && (written < target || p == parts - 1)) {
      out << documents[next] << "\n\n";
      written += documents[next].size() + 2;
      ++next;
    }
    if (!out.good()) throw IOError(fmt::format("[bench data] {}: cannot write", paths.back()));
  }
  return paths;
}

// Runs one spm_encode per part at the same time; returns the wall time.
double time_spm_encode(const std::string& model, const std::vector<std::string>& parts) {
  const auto start = Clock::now();
  std::vector<pid_t> children;
  for (const auto& part : parts) {
    std::vector<std::string> args = {"spm_encode", "--model=" + model, "--output_format=id", "--input=" + part,
                                     "--output=/dev/null"};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t child = 0;
    if (posix_spawnp(&child, "spm_encode", nullptr, nullptr, argv.data(), environ) != 0) {
      throw IOError("[bench data] cannot start spm_encode (Debian package: sentencepiece)");
    }
    children.push_back(child);
  }
  for (pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw IOError("[bench data] spm_encode failed");
  }
  return seconds_since(start);
}

double time_prep(const BenchDataCommand& command, const std::vector<std::string>& parts, int threads,
                 PrepSummary* summary) {
  PrepOptions options;
  options.inputs = parts;
  options.tokenizer_path = command.tokenizer;
  options.out_dir = (fs::path(command.work_dir) / "prep").string();
  options.threads = threads;
  const auto start = Clock::now();
  PrepSummary result = prepare_shards(options);
  const double seconds = seconds_since(start);
  if (summary) *summary = result;
  return seconds;
}

// Tokens per second that DataLoader::next delivers to one rank, over `batches` batches.
double time_loader(const BenchDataCommand& command, uint64_t seed) {
  LoaderOptions options{.seq_len = command.seq_len, .global_batch = command.batch, .seed = seed};
  DataLoader loader((fs::path(command.work_dir) / "prep" / "train").string(), options);
  for (int i = 0; i < 50; ++i) loader.next();  // the prefetch thread is running, pages are mapped
  int64_t checksum = 0;
  const auto start = Clock::now();
  for (int i = 0; i < command.loader_batches; ++i) {
    const Batch batch = loader.next();
    checksum += batch.targets.data<int32_t>()[0];
  }
  const double seconds = seconds_since(start);
  if (checksum < 0) fmt::print("");  // keeps the reads observable
  return static_cast<double>(command.loader_batches) * command.batch * command.seq_len / seconds;
}

void run_bench(BenchDataCommand& command) {
  const int threads = command.threads > 0 ? command.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool own_dir = command.work_dir.empty();
  if (own_dir) command.work_dir = (fs::temp_directory_path() / fmt::format("tsumugi-bench-data-{}", getpid())).string();
  fs::create_directories(command.work_dir);
  uint64_t bytes = 0;
  const auto parts = write_text_parts(command, threads, bytes);
  fmt::print("bench data: {} of text in {} parts, {} threads, tokenizer {}\n", human_bytes(static_cast<double>(bytes)),
             parts.size(), threads, command.tokenizer);

  PrepSummary summary;
  time_spm_encode(command.tokenizer, parts);  // warm-up: page cache, model file
  time_prep(command, parts, threads, &summary);
  std::vector<double> spm_times, prep_times;
  for (int r = 0; r < command.repeats; ++r) {
    spm_times.push_back(time_spm_encode(command.tokenizer, parts));
    prep_times.push_back(time_prep(command, parts, threads, nullptr));
    fmt::print("  run {}: spm_encode {:.3f} s, prep {:.3f} s\n", r + 1, spm_times.back(), prep_times.back());
  }
  const double spm = median(spm_times), prep = median(prep_times);
  const double mb = static_cast<double>(bytes) / 1e6;
  fmt::print("prep vs spm_encode ({} runs, medians):\n", command.repeats);
  fmt::print("  spm_encode x{}  {:.3f} s  {:.1f} MB/s\n", threads, spm, mb / spm);
  fmt::print("  tsumugi prep    {:.3f} s  {:.1f} MB/s  ({} tokens into shards)\n", prep, mb / prep,
             with_commas(summary.train.tokens + summary.val.tokens));
  fmt::print("  prep / spm_encode throughput: {:.3f}\n", spm / prep);

  std::vector<double> loader_rates;
  for (int r = 0; r < command.repeats; ++r) loader_rates.push_back(time_loader(command, static_cast<uint64_t>(r)));
  fmt::print("loader (seq_len {}, batch {}, one rank, {} batches per run): median {:.1f} M tokens/s (min {:.1f}, max {:.1f})\n",
             command.seq_len, command.batch, command.loader_batches, median(loader_rates) / 1e6,
             *std::min_element(loader_rates.begin(), loader_rates.end()) / 1e6,
             *std::max_element(loader_rates.begin(), loader_rates.end()) / 1e6);
  if (own_dir) fs::remove_all(command.work_dir);
}

}  // namespace

void add_bench_data_command(CLI::App& bench) {
  auto command = std::make_shared<BenchDataCommand>();
  CLI::App* data = bench.add_subcommand("data", "prep vs spm_encode on the same text and threads; loader tokens/s");
  data->add_option("--corpus", command->corpus, "Corpus (.jsonl or .txt, e.g. debian-ja.jsonl)")->required();
  data->add_option("--tokenizer", command->tokenizer, "SentencePiece model")->required();
  data->add_option("--text-field", command->text_field, "JSON field holding the text")->capture_default_str();
  data->add_option("--threads", command->threads, "Threads for both (default: all cores)");
  data->add_option("--repeats", command->repeats, "Timed runs of each")->capture_default_str();
  data->add_option("--seq-len", command->seq_len, "Loader sequence length")->capture_default_str();
  data->add_option("--batch", command->batch, "Loader batch (rows)")->capture_default_str();
  data->add_option("--loader-batches", command->loader_batches, "Batches per loader run")->capture_default_str();
  data->add_option("--work-dir", command->work_dir, "Scratch folder (default: a temporary one, removed after)");
  data->callback([command] { run_bench(*command); });
}

}  // namespace tsumugi::cli

#pragma once
// The data pipeline's subcommands, each in its own file; registered by add_data_commands.
#include <CLI/CLI.hpp>

#include <string>

namespace tsumugi::cli {

void add_corpus_command(CLI::App& app);      // tsumugi corpus debian-ja
void add_tokenizer_command(CLI::App& app);   // tsumugi tokenizer train / encode / decode
void add_prep_command(CLI::App& app);        // tsumugi prep
void add_inspect_command(CLI::App& app);     // tsumugi inspect
void add_bench_data_command(CLI::App& bench);  // tsumugi bench data

/// "12.3 MB", "4.5 GB": bytes for people.
std::string human_bytes(double bytes);
/// "1,234,567"
std::string with_commas(uint64_t value);

/// One progress line on stderr: redrawn in place on a terminal (at most ten times a second),
/// plain lines every few seconds otherwise (logs, CI).
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  /// `done` of `total` units (for the bar and the time left), `rate_bytes` processed per second.
  void update(double done, double total, double rate_bytes_per_second, bool force = false);
  /// Ends the line on a terminal.
  void finish();

 private:
  std::string label_;
  bool terminal_;
  double last_print_ = -1e9;
  double started_;
  bool printed_ = false;
  bool printed_complete_ = false;
};

}  // namespace tsumugi::cli

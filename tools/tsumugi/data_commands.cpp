// Registers the data pipeline's subcommands; shared helpers for printing.
#include "data_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "commands.h"

namespace tsumugi::cli {

void add_data_commands(CLI::App& app, CLI::App& bench) {
  add_corpus_command(app);
  add_tokenizer_command(app);
  add_prep_command(app);
  add_inspect_command(app);
  add_bench_data_command(bench);
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[unit]);
}

std::string with_commas(uint64_t value) {
  const std::string digits = std::to_string(value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), terminal_(isatty(STDERR_FILENO) != 0), started_(now_seconds()) {}

void ProgressBar::update(double done, double total, double rate, bool force) {
  const double now = now_seconds();
  const double fraction = total > 0 ? std::min(1.0, done / total) : 0.0;
  if (!force && now - last_print_ < (terminal_ ? 0.1 : 5.0)) return;
  if (fraction >= 1.0 && printed_complete_) return;
  printed_complete_ = fraction >= 1.0;
  last_print_ = now;
  const double elapsed = now - started_;
  const double left = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0.0;
  const std::string eta = fmt::format("{:d}:{:02d}", static_cast<int>(left) / 60, static_cast<int>(left) % 60);
  if (terminal_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::fprintf(stderr, "\r%s [%s%s] %5.1f%% %7.1f MB/s  %s left ", label_.c_str(), std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), 100 * fraction, rate / 1e6, eta.c_str());
  } else {
    std::fprintf(stderr, "%s: %5.1f%%  %.1f MB/s  %s left\n", label_.c_str(), 100 * fraction, rate / 1e6, eta.c_str());
  }
  std::fflush(stderr);
  printed_ = true;
}

void ProgressBar::finish() {
  if (terminal_ && printed_) std::fprintf(stderr, "\n");
}

}  // namespace tsumugi::cli

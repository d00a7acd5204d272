#pragma once
// Internal: the progress line and metrics.jsonl of a run.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace tsumugi {

/// Appends one JSON object per line to RUN/metrics.jsonl. On resume, records after the resume
/// step (written by the interrupted run after its last checkpoint) are dropped first, so the
/// file reads as one uninterrupted run.
class MetricsFile {
 public:
  MetricsFile(const std::string& path, int64_t resume_step);
  ~MetricsFile();
  void write(const nlohmann::json& record);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

/// "12:34:56" from seconds.
std::string format_duration(double seconds);

/// The progress line: a bar redrawn in place on a terminal, plain lines in a log.
void print_progress(const nlohmann::json& record, int64_t total_steps, double seconds_left, bool terminal);

}  // namespace tsumugi

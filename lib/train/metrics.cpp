#include "metrics.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/check.h"

namespace tsumugi {

MetricsFile::MetricsFile(const std::string& path, int64_t resume_step) : path_(path) {
  std::vector<std::string> kept;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      try {
        const auto record = nlohmann::json::parse(line);
        if (record.value("step", int64_t{0}) <= resume_step) kept.push_back(line);
      } catch (const nlohmann::json::exception&) {
        // A line cut short by a crash: drop it.
      }
    }
  }
  // The kept history goes to a temporary that replaces the file by rename, so a kill at any
  // moment leaves either the old history or the new one, never an emptied file.
  const std::string temporary = path + ".tmp";
  std::FILE* out = std::fopen(temporary.c_str(), "w");
  TSU_CHECK(out != nullptr, IOError, "[metrics] cannot write {}", temporary);
  for (const std::string& line : kept) std::fprintf(out, "%s\n", line.c_str());
  const bool written = std::fflush(out) == 0 && ::fsync(::fileno(out)) == 0;
  const bool closed = std::fclose(out) == 0;
  TSU_CHECK(written && closed && std::rename(temporary.c_str(), path.c_str()) == 0, IOError,
            "[metrics] cannot write {}: {}", path, std::strerror(errno));
  file_ = std::fopen(path.c_str(), "a");
  TSU_CHECK(file_ != nullptr, IOError, "[metrics] cannot write {}", path);
}

MetricsFile::~MetricsFile() {
  if (file_) std::fclose(file_);
}

void MetricsFile::write(const nlohmann::json& record) {
  std::fprintf(file_, "%s\n", record.dump().c_str());
  std::fflush(file_);
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

void print_progress(const nlohmann::json& r, int64_t total_steps, double seconds_left, bool terminal) {
  const int64_t step = r["step"].get<int64_t>();
  const std::string line = fmt::format(
      "step {:>{}}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {:.0f} tok/s | mfu {:.2f} | mem {:.0f} MB | {} left",
      step, std::to_string(total_steps).size(), total_steps, r["loss"].get<double>(), r["lr"].get<double>(),
      r["grad_norm"].get<double>(), r["tokens_per_s"].get<double>(), r["mfu"].get<double>(),
      r["memory_mb"].get<double>(), format_duration(seconds_left));
  if (!terminal) {
    std::printf("%s\n", line.c_str());
  } else {
    constexpr int kWidth = 20;
    const int filled = static_cast<int>(kWidth * step / std::max<int64_t>(total_steps, 1));
    std::printf("\r%s [%s%s]\x1b[K", line.c_str(), std::string(static_cast<size_t>(filled), '#').c_str(),
                std::string(static_cast<size_t>(kWidth - filled), '.').c_str());
    if (step == total_steps) std::printf("\n");
  }
  std::fflush(stdout);
}

}  // namespace tsumugi

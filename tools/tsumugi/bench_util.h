#pragma once
// Shared by the benchmark commands.
#include <tsumugi/core/device.h>
#include <tsumugi/core/dtype.h>

#include <algorithm>
#include <string>
#include <vector>

namespace tsumugi::cli {

/// The median (the mean of the two middle values for an even count); 0 for no values.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/// The device named by a --device flag ("cpu", "cuda", "cuda:N"); throws a one-line error when
/// this build has no CUDA or no such GPU is visible.
Device bench_device(const std::string& name);

}  // namespace tsumugi::cli

#pragma once
/// Learning-rate schedules: linear warm-up from 0, then cosine, WSD (warm-up, stable, decay),
/// linear or constant decay to min_lr at the last step.
#include <cstdint>
#include <string>

namespace tsumugi {

struct LRSchedule {
  std::string kind = "cosine";  ///< cosine | wsd | linear | constant
  double lr = 6e-4;             ///< peak
  double min_lr = 6e-5;         ///< at the last step
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double decay_fraction = 0.2;  ///< wsd: share of the steps in the final (linear) decay

  /// Learning rate of optimizer step `step` (0-based).
  double at(int64_t step) const;
};

}  // namespace tsumugi

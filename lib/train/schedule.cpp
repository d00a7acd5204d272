#include <tsumugi/train/schedule.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/check.h"

namespace tsumugi {

double LRSchedule::at(int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - 1 - warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  if (kind == "cosine") return min_lr + 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) * (lr - min_lr);
  if (kind == "linear") return lr - progress * (lr - min_lr);
  if (kind == "constant") return lr;
  if (kind == "wsd") {
    const double stable = 1.0 - decay_fraction;
    if (progress <= stable) return lr;
    return lr - (progress - stable) / decay_fraction * (lr - min_lr);
  }
  TSU_FAIL(ValueError, "[schedule] unknown schedule '{}' (cosine, wsd, linear or constant)", kind);
}

}  // namespace tsumugi

#include "spike.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tsumugi {

double LossSpikeDetector::mean() const {
  if (losses_.empty()) return 0.0;
  double sum = 0;
  for (double l : losses_) sum += l;
  return sum / static_cast<double>(losses_.size());
}

double LossSpikeDetector::std() const {
  if (losses_.size() < 2) return 0.0;
  const double m = mean();
  double sum = 0;
  for (double l : losses_) sum += (l - m) * (l - m);
  return std::sqrt(sum / static_cast<double>(losses_.size() - 1));
}

double LossSpikeDetector::threshold() const {
  if (!enabled() || static_cast<int64_t>(losses_.size()) < window_) return std::numeric_limits<double>::infinity();
  const double m = mean();
  return m + zscore_ * std::max(std(), 0.01 * std::abs(m));
}

void LossSpikeDetector::add(double loss) {
  if (!enabled() || !std::isfinite(loss)) return;
  losses_.push_back(loss);
  while (static_cast<int64_t>(losses_.size()) > window_) losses_.pop_front();
}

void LossSpikeDetector::restore(const std::vector<double>& values) {
  losses_.clear();
  for (double v : values) add(v);
}

}  // namespace tsumugi

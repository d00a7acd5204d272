#pragma once
// Internal: loss-spike detection against a running window of recent losses.
#include <cstdint>
#include <deque>
#include <vector>

namespace tsumugi {

/// A step's loss is a spike when the window of the last `window` accepted losses is full and the
/// loss exceeds mean + zscore * max(std, 1% of the mean): the floor keeps a flat stretch of losses
/// (std near 0) from turning ordinary noise into spikes. zscore = 0 turns detection off.
class LossSpikeDetector {
 public:
  LossSpikeDetector(int64_t window, double zscore) : window_(window), zscore_(zscore) {}
  bool enabled() const { return zscore_ > 0 && window_ > 1; }
  /// The loss above which the next step counts as a spike (infinity while the window fills).
  double threshold() const;
  double mean() const;
  double std() const;
  bool is_spike(double loss) const { return enabled() && loss > threshold(); }
  /// Adds an accepted step's loss to the window (spikes that were skipped are not added).
  void add(double loss);
  /// The window, oldest first: saved with a checkpoint so that a resumed run decides the same.
  std::vector<double> values() const { return {losses_.begin(), losses_.end()}; }
  void restore(const std::vector<double>& values);

 private:
  int64_t window_;
  double zscore_;
  std::deque<double> losses_;
};

}  // namespace tsumugi

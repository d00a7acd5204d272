// Loss-spike detection: a window of accepted losses, a z-score threshold with a floor.
#include <gtest/gtest.h>

#include <cmath>

#include "../../lib/train/spike.h"

namespace tsumugi {
namespace {

TEST(LossSpikeDetector, FlagsNothingUntilTheWindowIsFull) {
  LossSpikeDetector d(4, 3.0);
  for (double l : {5.0, 4.9, 4.8}) {
    EXPECT_FALSE(d.is_spike(100.0));
    d.add(l);
  }
  d.add(4.7);
  EXPECT_TRUE(d.is_spike(100.0));
}

TEST(LossSpikeDetector, ThresholdIsMeanPlusZTimesStd) {
  LossSpikeDetector d(4, 2.0);
  for (double l : {1.0, 2.0, 3.0, 4.0}) d.add(l);
  const double std = std::sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3.0);
  EXPECT_DOUBLE_EQ(d.threshold(), 2.5 + 2.0 * std);
  EXPECT_FALSE(d.is_spike(2.5 + 2.0 * std));
  EXPECT_TRUE(d.is_spike(2.5 + 2.0 * std + 1e-9));
}

TEST(LossSpikeDetector, FlatLossesUseAOnePercentFloorOnTheSpread) {
  LossSpikeDetector d(3, 5.0);
  for (int i = 0; i < 3; ++i) d.add(2.0);
  EXPECT_DOUBLE_EQ(d.threshold(), 2.0 + 5.0 * 0.02);
  EXPECT_FALSE(d.is_spike(2.05));
  EXPECT_TRUE(d.is_spike(2.2));
}

TEST(LossSpikeDetector, KeepsOnlyTheLastWindowAndRoundTripsItsState) {
  LossSpikeDetector d(3, 4.0);
  for (double l : {9.0, 1.0, 1.1, 0.9}) d.add(l);
  EXPECT_EQ(d.values(), (std::vector<double>{1.0, 1.1, 0.9}));
  LossSpikeDetector e(3, 4.0);
  e.restore(d.values());
  EXPECT_DOUBLE_EQ(e.threshold(), d.threshold());
}

TEST(LossSpikeDetector, ZeroZscoreTurnsItOffAndNonFiniteLossesAreNotAdded) {
  LossSpikeDetector off(2, 0.0);
  off.add(1.0);
  off.add(1.0);
  EXPECT_FALSE(off.is_spike(1e9));
  LossSpikeDetector d(2, 3.0);
  d.add(NAN);
  d.add(INFINITY);
  EXPECT_TRUE(d.values().empty());
}

}  // namespace
}  // namespace tsumugi

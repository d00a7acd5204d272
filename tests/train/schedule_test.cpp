#include <gtest/gtest.h>
#include <tsumugi/train/schedule.h>

#include <cmath>

using namespace tsumugi;

TEST(LRSchedule, WarmsUpLinearlyThenDecaysToMinimum) {
  LRSchedule s{.kind = "cosine", .lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);              // decay starts at the peak
  EXPECT_NEAR(s.at(8), 0.1 + 0.45 * (1 + std::cos(M_PI * 4 / 9)), 1e-12);  // progress 4/9 of the way
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);             // the last step is at min_lr
  EXPECT_DOUBLE_EQ(s.at(100), 0.1);
  for (int64_t i = 4; i < 13; ++i) EXPECT_GT(s.at(i), s.at(i + 1));
}

TEST(LRSchedule, LinearConstantAndWsd) {
  LRSchedule linear{.kind = "linear", .lr = 1.0, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 11};
  EXPECT_DOUBLE_EQ(linear.at(5), 0.5);
  LRSchedule constant{.kind = "constant", .lr = 0.3, .min_lr = 0.0, .warmup_steps = 2, .total_steps = 10};
  EXPECT_DOUBLE_EQ(constant.at(1), 0.3);
  EXPECT_DOUBLE_EQ(constant.at(9), 0.3);
  LRSchedule wsd{.kind = "wsd", .lr = 1.0, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 11, .decay_fraction = 0.2};
  EXPECT_DOUBLE_EQ(wsd.at(8), 1.0);   // stable for the first 80%
  EXPECT_NEAR(wsd.at(9), 0.5, 1e-12);  // then linear to min_lr
  EXPECT_NEAR(wsd.at(10), 0.0, 1e-12);
}

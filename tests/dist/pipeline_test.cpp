// Pipeline schedules as plans: every pass once and in a valid order, 1F1B's activation bound,
// the bubble of the simulated timeline, and balanced stage cuts.
#include <gtest/gtest.h>

#include <tsumugi/core/error.h>
#include <tsumugi/dist/pipeline.h>

#include <set>

namespace tsumugi {
namespace {

using K = PipelineScheduleKind;

std::string render(const std::vector<PipelineAction>& actions) {
  std::string s;
  for (const PipelineAction& a : actions)
    s += (a.kind == PipelineAction::forward ? "F" : "B") + std::to_string(a.micro_batch) + " ";
  return s;
}

TEST(PipelineSchedule, GpipeRunsAllForwardsThenAllBackwardsInReverse) {
  EXPECT_EQ(render(pipeline_schedule(K::gpipe, 4, 1, 3)), "F0 F1 F2 B2 B1 B0 ");
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  // Stage 0 of 4 holds three micro-batches before its first backward; the last stage none.
  EXPECT_EQ(render(pipeline_schedule(K::one_f_one_b, 4, 0, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(render(pipeline_schedule(K::one_f_one_b, 4, 3, 6)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  // Fewer micro-batches than stages: warm-up stops at M.
  EXPECT_EQ(render(pipeline_schedule(K::one_f_one_b, 4, 0, 2)), "F0 F1 B0 B1 ");
}

TEST(PipelineSchedule, EveryMicroBatchGoesForwardThenBackwardExactlyOnce) {
  for (K kind : {K::gpipe, K::one_f_one_b})
    for (int64_t stages : {1, 2, 3, 4, 8})
      for (int64_t m : {1, 2, 5, 8, 16})
        for (int64_t s = 0; s < stages; ++s) {
          std::set<int64_t> forwarded, backwarded;
          for (const PipelineAction& a : pipeline_schedule(kind, stages, s, m)) {
            if (a.kind == PipelineAction::forward) {
              EXPECT_TRUE(forwarded.insert(a.micro_batch).second);
            } else {
              EXPECT_TRUE(forwarded.count(a.micro_batch)) << "backward before forward";
              EXPECT_TRUE(backwarded.insert(a.micro_batch).second);
            }
          }
          EXPECT_EQ(static_cast<int64_t>(forwarded.size()), m);
          EXPECT_EQ(static_cast<int64_t>(backwarded.size()), m);
        }
}

TEST(PipelineSchedule, OneFOneBHoldsAtMostStagesMinusStageActivations) {
  for (int64_t stages : {2, 4, 8})
    for (int64_t s = 0; s < stages; ++s) {
      EXPECT_EQ(peak_activations(pipeline_schedule(K::one_f_one_b, stages, s, 32)), stages - s);
      EXPECT_EQ(peak_activations(pipeline_schedule(K::gpipe, stages, s, 32)), 32);
    }
}

TEST(PipelineSchedule, BalancedStagesIdleForTheIdealBubble) {
  for (K kind : {K::gpipe, K::one_f_one_b})
    for (int64_t stages : {2, 4})
      for (int64_t m : {1, 4, 8, 32}) {
        const PipelineTimeline t = simulate_pipeline(kind, stages, m, 1.0, 2.0);
        EXPECT_DOUBLE_EQ(t.makespan, 3.0 * static_cast<double>(m + stages - 1));
        for (double idle : t.idle_fraction) EXPECT_NEAR(idle, ideal_bubble_fraction(stages, m), 1e-12);
      }
  EXPECT_DOUBLE_EQ(ideal_bubble_fraction(4, 8), 3.0 / 11.0);
}

TEST(PipelineSchedule, UnknownScheduleNameIsAnError) {
  EXPECT_EQ(parse_pipeline_schedule("1f1b"), K::one_f_one_b);
  EXPECT_THROW(parse_pipeline_schedule("interleaved"), ValueError);
  EXPECT_THROW(pipeline_schedule(K::gpipe, 2, 2, 4), ValueError);
}

TEST(BalanceStages, EqualLayersSplitEvenly) {
  EXPECT_EQ(balance_stages(std::vector<double>(8, 1.0), 4), (std::vector<int64_t>{0, 2, 4, 6}));
  EXPECT_EQ(balance_stages(std::vector<double>(3, 1.0), 3), (std::vector<int64_t>{0, 1, 2}));
}

TEST(BalanceStages, HeavyEndsGetFewerLayers) {
  // Embedding on the first stage and head + loss on the last cost as much as two blocks each.
  const std::vector<double> costs = {2, 1, 1, 1, 1, 1, 1, 2};
  const std::vector<int64_t> starts = balance_stages(costs, 2);
  EXPECT_EQ(starts, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(balance_stages({5, 1, 1, 1, 1, 1}, 2), (std::vector<int64_t>{0, 1}));
  EXPECT_THROW(balance_stages({1, 1}, 3), ValueError);
}

}  // namespace
}  // namespace tsumugi

// Pipeline schedules as plans: every pass once and in a valid order, 1F1B's activation bound,
// the bubble of the simulated timeline, and balanced stage cuts.
#include <gtest/gtest.h>

#include <tsumugi/core/error.h>
#include <tsumugi/dist/pipeline.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

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

using Plans = std::vector<std::vector<std::vector<PipelineMessage>>>;

Plans exchanges_of(PipelineScheduleKind kind, int64_t stages, int64_t micro_batches, bool tied) {
  Plans plans;
  for (int64_t s = 0; s < stages; ++s) plans.push_back(pipeline_exchanges(kind, stages, s, micro_batches, tied));
  return plans;
}

TEST(PipelineExchanges, NoStagesWaitOnEachOtherForeverInAnySchedule) {
  for (PipelineScheduleKind kind : {PipelineScheduleKind::gpipe, PipelineScheduleKind::one_f_one_b})
    for (int64_t stages = 2; stages <= 8; ++stages)
      for (int64_t m = 1; m <= 16; ++m)
        for (bool tied : {false, true})
          EXPECT_TRUE(pipeline_exchanges_complete(exchanges_of(kind, stages, m, tied)))
              << "stages " << stages << ", micro-batches " << m << ", tied " << tied;
}

// NCCL ignores tags: the k-th message one stage sends another is the k-th that the other
// receives from it. So each side must post the messages between them in the same order.
TEST(PipelineExchanges, BothSidesPostTheMessagesBetweenThemInTheSameOrder) {
  for (PipelineScheduleKind kind : {PipelineScheduleKind::gpipe, PipelineScheduleKind::one_f_one_b})
    for (int64_t stages = 2; stages <= 6; ++stages)
      for (bool tied : {false, true}) {
        const Plans plans = exchanges_of(kind, stages, 7, tied);
        std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<int, int64_t>>> sent, received;
        for (int64_t s = 0; s < stages; ++s)
          for (const auto& batch : plans[s])
            for (const PipelineMessage& m : batch)
              (m.send ? sent[{s, m.peer}] : received[{m.peer, s}]).push_back({m.kind, m.micro_batch});
        EXPECT_EQ(sent, received) << "stages " << stages << ", tied " << tied;
      }
}

TEST(PipelineExchanges, TheCheckFindsNeighboursThatBothReceiveFirst) {
  using M = PipelineMessage;
  // Each stage waits for the other's message before sending its own.
  const Plans plans = {{{{M::gradient, 0, 1, false}}, {{M::activation, 0, 1, true}}},
                       {{{M::activation, 0, 0, false}}, {{M::gradient, 0, 0, true}}}};
  EXPECT_FALSE(pipeline_exchanges_complete(plans));
  // The same messages with the first stage sending first complete.
  const Plans fixed = {{{{M::activation, 0, 1, true}}, {{M::gradient, 0, 1, false}}},
                       {{{M::activation, 0, 0, false}}, {{M::gradient, 0, 0, true}}}};
  EXPECT_TRUE(pipeline_exchanges_complete(fixed));
}

TEST(PipelineExchanges, EachActivationAndGradientIsSentOnceAndReceivedOnceBeforeItsUse) {
  for (PipelineScheduleKind kind : {PipelineScheduleKind::gpipe, PipelineScheduleKind::one_f_one_b}) {
    const int64_t stages = 4, m = 6;
    const Plans plans = exchanges_of(kind, stages, m, true);
    for (int64_t s = 0; s < stages; ++s) {
      const std::vector<PipelineAction> actions = pipeline_schedule(kind, stages, s, m);
      ASSERT_EQ(plans[s].size(), actions.size() + 1);
      std::set<std::tuple<int, int64_t, bool>> seen;
      for (size_t i = 0; i < actions.size(); ++i) {
        // What action i consumes arrives in batch i, before it runs.
        const PipelineAction& a = actions[i];
        const bool needs = a.kind == PipelineAction::forward ? s > 0 : s + 1 < stages;
        const PipelineMessage input{a.kind == PipelineAction::forward ? PipelineMessage::activation
                                                                      : PipelineMessage::gradient,
                                    a.micro_batch, a.kind == PipelineAction::forward ? s - 1 : s + 1, false};
        const auto& before = plans[s][i];
        EXPECT_EQ(std::count(before.begin(), before.end(), input), needs ? 1 : 0) << "stage " << s << " action " << i;
      }
      for (const auto& batch : plans[s])
        for (const PipelineMessage& msg : batch)
          EXPECT_TRUE(seen.insert({msg.kind, msg.micro_batch, msg.send}).second) << "stage " << s << " twice";
      // Middle stages: every micro-batch's activation and gradient, each in and out.
      if (s > 0 && s + 1 < stages) {
        EXPECT_EQ(seen.size(), static_cast<size_t>(4 * m));
      }
    }
  }
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

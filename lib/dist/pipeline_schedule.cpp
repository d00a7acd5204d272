// Pipeline schedules, their simulated timeline and balanced stage cuts: pure functions, so that
// the runtime (which sends activations between ranks) follows a plan tested on its own.
#include <tsumugi/dist/pipeline.h>

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <numeric>

#include "core/check.h"

namespace tsumugi {

PipelineScheduleKind parse_pipeline_schedule(std::string_view name) {
  if (name == "gpipe") return PipelineScheduleKind::gpipe;
  if (name == "1f1b") return PipelineScheduleKind::one_f_one_b;
  TSU_FAIL(ValueError, "[pipeline] unknown schedule '{}' (gpipe or 1f1b)", name);
}

std::vector<PipelineAction> pipeline_schedule(PipelineScheduleKind kind, int64_t stages, int64_t stage,
                                              int64_t micro_batches) {
  TSU_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, ValueError,
            "[pipeline] invalid schedule: stage {} of {} with {} micro-batches", stage, stages, micro_batches);
  std::vector<PipelineAction> actions;
  actions.reserve(static_cast<size_t>(2 * micro_batches));
  if (kind == PipelineScheduleKind::gpipe) {
    for (int64_t m = 0; m < micro_batches; ++m) actions.push_back({PipelineAction::forward, m});
    for (int64_t m = micro_batches; m-- > 0;) actions.push_back({PipelineAction::backward, m});
    return actions;
  }
  const int64_t warmup = std::min(stages - stage - 1, micro_batches);
  int64_t next_forward = 0, next_backward = 0;
  for (; next_forward < warmup; ++next_forward) actions.push_back({PipelineAction::forward, next_forward});
  while (next_forward < micro_batches) {  // steady state: one forward, then the oldest backward
    actions.push_back({PipelineAction::forward, next_forward++});
    actions.push_back({PipelineAction::backward, next_backward++});
  }
  for (; next_backward < micro_batches; ++next_backward) actions.push_back({PipelineAction::backward, next_backward});
  return actions;
}

std::vector<std::vector<PipelineMessage>> pipeline_exchanges(PipelineScheduleKind kind, int64_t stages,
                                                             int64_t stage, int64_t micro_batches,
                                                             bool tied_per_micro_batch) {
  const std::vector<PipelineAction> actions = pipeline_schedule(kind, stages, stage, micro_batches);
  const bool first = stage == 0, last = stage + 1 == stages;
  auto needs = [&](const PipelineAction& a, std::vector<PipelineMessage>& batch) {
    if (a.kind == PipelineAction::forward && !first)
      batch.push_back({PipelineMessage::activation, a.micro_batch, stage - 1, false});
    if (a.kind == PipelineAction::backward && !last)
      batch.push_back({PipelineMessage::gradient, a.micro_batch, stage + 1, false});
  };
  std::vector<std::vector<PipelineMessage>> batches(actions.size() + 1);
  needs(actions.front(), batches[0]);
  for (size_t i = 0; i < actions.size(); ++i) {
    const PipelineAction& a = actions[i];
    std::vector<PipelineMessage>& batch = batches[i + 1];
    if (a.kind == PipelineAction::forward && !last)
      batch.push_back({PipelineMessage::activation, a.micro_batch, stage + 1, true});
    if (a.kind == PipelineAction::backward && !first)
      batch.push_back({PipelineMessage::gradient, a.micro_batch, stage - 1, true});
    if (a.kind == PipelineAction::backward && tied_per_micro_batch && stages > 1 && (first || last))
      batch.push_back({PipelineMessage::tied, a.micro_batch, first ? stages - 1 : 0, last});
    if (i + 1 < actions.size()) needs(actions[i + 1], batch);
  }
  return batches;
}

bool pipeline_exchanges_complete(const std::vector<std::vector<std::vector<PipelineMessage>>>& plans) {
  const auto stages = static_cast<int64_t>(plans.size());
  // A message is the same on both sides: (sender, receiver, kind, micro-batch).
  auto key = [](int64_t stage, const PipelineMessage& m) {
    const int64_t from = m.send ? stage : m.peer, to = m.send ? m.peer : stage;
    return std::tuple(from, to, static_cast<int>(m.kind), m.micro_batch);
  };
  using Key = std::tuple<int64_t, int64_t, int, int64_t>;
  std::vector<size_t> at(static_cast<size_t>(stages), 0);  // each stage's current batch
  std::set<Key> met;  // messages whose two halves were posted at the same time: delivered
  for (bool progress = true; progress;) {
    progress = false;
    std::map<Key, int> posted;  // halves in the stages' current batches
    for (int64_t s = 0; s < stages; ++s)
      if (at[s] < plans[s].size())
        for (const PipelineMessage& m : plans[s][at[s]])
          if (++posted[key(s, m)] == 2) met.insert(key(s, m));
    for (int64_t s = 0; s < stages; ++s) {
      if (at[s] >= plans[s].size()) continue;
      const std::vector<PipelineMessage>& batch = plans[s][at[s]];
      if (std::all_of(batch.begin(), batch.end(), [&](const PipelineMessage& m) { return met.count(key(s, m)) > 0; })) {
        ++at[s];
        progress = true;
      }
    }
  }
  for (int64_t s = 0; s < stages; ++s)
    if (at[s] < plans[s].size()) return false;
  return true;
}

int64_t peak_activations(const std::vector<PipelineAction>& actions) {
  int64_t alive = 0, peak = 0;
  for (const PipelineAction& a : actions) {
    alive += a.kind == PipelineAction::forward ? 1 : -1;
    peak = std::max(peak, alive);
  }
  return peak;
}

PipelineTimeline simulate_pipeline(PipelineScheduleKind kind, int64_t stages, int64_t micro_batches,
                                   double forward_cost, double backward_cost) {
  constexpr double kNotYet = -1;
  std::vector<std::vector<PipelineAction>> plans;
  for (int64_t s = 0; s < stages; ++s) plans.push_back(pipeline_schedule(kind, stages, s, micro_batches));
  // end[s][kind][m]: when stage s finished that pass of micro-batch m.
  std::vector<std::vector<std::vector<double>>> end(
      static_cast<size_t>(stages), std::vector<std::vector<double>>(2, std::vector<double>(micro_batches, kNotYet)));
  std::vector<size_t> next(static_cast<size_t>(stages), 0);
  std::vector<double> free_at(static_cast<size_t>(stages), 0.0), busy(static_cast<size_t>(stages), 0.0);
  // Repeatedly run any stage whose next action's input is ready; each round makes progress or deadlocks.
  for (bool progress = true; progress;) {
    progress = false;
    for (int64_t s = 0; s < stages; ++s) {
      while (next[s] < plans[s].size()) {
        const PipelineAction a = plans[s][next[s]];
        const bool fwd = a.kind == PipelineAction::forward;
        double ready = 0;
        if (fwd && s > 0) ready = end[s - 1][0][a.micro_batch];                   // activation from the left
        if (!fwd && s + 1 < stages) ready = end[s + 1][1][a.micro_batch];         // gradient from the right
        if (!fwd && s + 1 == stages) ready = end[s][0][a.micro_batch];            // the loss of its own forward
        if (ready == kNotYet) break;
        const double cost = fwd ? forward_cost : backward_cost;
        const double start = std::max(ready, free_at[s]);
        end[s][fwd ? 0 : 1][a.micro_batch] = free_at[s] = start + cost;
        busy[s] += cost;
        ++next[s];
        progress = true;
      }
    }
  }
  for (int64_t s = 0; s < stages; ++s)
    TSU_CHECK(next[s] == plans[s].size(), ValueError, "[pipeline] the schedule deadlocks at stage {}", s);
  PipelineTimeline timeline;
  timeline.makespan = *std::max_element(free_at.begin(), free_at.end());
  for (int64_t s = 0; s < stages; ++s) timeline.idle_fraction.push_back(1.0 - busy[s] / timeline.makespan);
  return timeline;
}

double ideal_bubble_fraction(int64_t stages, int64_t micro_batches) {
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

std::vector<int64_t> balance_stages(const std::vector<double>& layer_costs, int64_t stages) {
  const int64_t n = static_cast<int64_t>(layer_costs.size());
  TSU_CHECK(stages >= 1 && stages <= n, ValueError, "[pipeline] cannot cut {} layers into {} non-empty stages", n,
            stages);
  // best[k][i]: the smallest possible maximum stage cost for the first i layers in k stages.
  std::vector<double> prefix(static_cast<size_t>(n + 1), 0.0);
  for (int64_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer_costs[i];
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(static_cast<size_t>(stages + 1), std::vector<double>(n + 1, inf));
  std::vector<std::vector<int64_t>> cut(static_cast<size_t>(stages + 1), std::vector<int64_t>(n + 1, 0));
  best[0][0] = 0;
  for (int64_t k = 1; k <= stages; ++k)
    for (int64_t i = k; i <= n; ++i)
      for (int64_t j = k - 1; j < i; ++j) {  // the last stage holds layers [j, i)
        const double cost = std::max(best[k - 1][j], prefix[i] - prefix[j]);
        if (cost < best[k][i]) {
          best[k][i] = cost;
          cut[k][i] = j;
        }
      }
  std::vector<int64_t> starts(static_cast<size_t>(stages));
  for (int64_t k = stages, i = n; k >= 1; --k) {
    starts[k - 1] = cut[k][i];
    i = cut[k][i];
  }
  return starts;
}

}  // namespace tsumugi

#pragma once
/// Pipeline parallelism, the parts that are pure functions: which forward and backward passes each
/// stage runs in which order (GPipe, 1F1B), how long that takes when every pass has a known cost
/// (the bubble), and where to cut a stack of layers into balanced stages.
#include <cstdint>
#include <string_view>
#include <vector>

namespace tsumugi {

enum class PipelineScheduleKind { gpipe, one_f_one_b };
/// "gpipe" or "1f1b"; throws ValueError otherwise.
PipelineScheduleKind parse_pipeline_schedule(std::string_view name);

/// One step of a stage's work: the forward or the backward pass of one micro-batch.
struct PipelineAction {
  enum Kind : uint8_t { forward, backward } kind;
  int64_t micro_batch;
  bool operator==(const PipelineAction&) const = default;
};

/// The passes that stage `stage` (0-based) of `stages` runs, in order, for `micro_batches`
/// micro-batches. GPipe: every forward, then every backward (in reverse, so the last activations
/// free first). 1F1B: min(stages - stage - 1, micro_batches) warm-up forwards, then one forward
/// and one backward alternately, then the remaining backwards; at most stages - stage
/// micro-batches' activations are alive at once.
std::vector<PipelineAction> pipeline_schedule(PipelineScheduleKind kind, int64_t stages, int64_t stage,
                                              int64_t micro_batches);

/// A message of the grouped transport: an activation (after a forward) or its gradient (after a
/// backward) of one micro-batch between neighbouring stages, or the tied embedding's gradient of
/// one micro-batch from the last stage to the first (deterministic mode).
struct PipelineMessage {
  enum Kind : uint8_t { activation, gradient, tied } kind;
  int64_t micro_batch;
  int64_t peer;  ///< the other stage
  bool send;     ///< true: this stage sends it; false: receives it
  bool operator==(const PipelineMessage&) const = default;
};

/// What stage `stage` sends and receives around its actions when every exchange blocks until its
/// peer's matching one is posted (NCCL's point-to-point: a kernel waits for its peer). Entry 0 is
/// before the first action (its input); entry i + 1 right after action i: that action's output
/// (and, with `tied_per_micro_batch`, the tied gradient after a backward) together with what
/// action i + 1 needs. Each entry is one send_recv; entries may be empty. Sending and receiving
/// in one batch is what keeps neighbours from waiting on each other (Megatron-LM's
/// send_forward_recv_backward).
std::vector<std::vector<PipelineMessage>> pipeline_exchanges(PipelineScheduleKind kind, int64_t stages,
                                                             int64_t stage, int64_t micro_batches,
                                                             bool tied_per_micro_batch);

/// True when every stage gets through its batches (`plans[s]`: stage s's, as pipeline_exchanges
/// gives them) if a batch returns only once each of its messages has met the matching message of
/// its peer, posted in the peer's current batch; false when some stages would wait on each other
/// forever.
bool pipeline_exchanges_complete(const std::vector<std::vector<std::vector<PipelineMessage>>>& plans);

/// The most micro-batches whose activations a stage holds at once under `actions` (a forward
/// keeps them until its backward).
int64_t peak_activations(const std::vector<PipelineAction>& actions);

/// When each pass of every stage runs, if a forward takes `forward_cost` and a backward
/// `backward_cost` on every stage, a stage's forward of micro-batch m waits for the previous
/// stage's, its backward for the next stage's, and each stage runs its own actions in order.
struct PipelineTimeline {
  double makespan = 0;                 ///< time from the first start to the last end
  std::vector<double> idle_fraction;   ///< per stage: share of the makespan spent waiting
};
/// Simulates the schedules of all stages together; throws ValueError if they would deadlock.
PipelineTimeline simulate_pipeline(PipelineScheduleKind kind, int64_t stages, int64_t micro_batches,
                                   double forward_cost = 1.0, double backward_cost = 2.0);

/// The ideal idle fraction of balanced stages, (P - 1) / (M + P - 1), for either schedule.
double ideal_bubble_fraction(int64_t stages, int64_t micro_batches);

/// Cuts layers with costs `layer_costs` into `stages` contiguous, non-empty groups so that the
/// most expensive group is as cheap as possible (ties: earlier cuts). Returns each stage's first
/// layer index (stages entries, the first 0). Throws ValueError for more stages than layers.
std::vector<int64_t> balance_stages(const std::vector<double>& layer_costs, int64_t stages);

}  // namespace tsumugi

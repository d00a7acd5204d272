#pragma once
// Internal: one optimizer step's forward and backward passes on this rank, and the gradient
// communication that leaves the global batch's mean gradient on every rank.
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/data/loader.h>
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/dist/pipeline_stage.h>
#include <tsumugi/train/config.h>

#include <memory>
#include <optional>

namespace tsumugi {

class GradientStep {
 public:
  /// `group` holds the data-parallel ranks. Deterministic mode needs power-of-two counts of
  /// ranks and of micro-batches (checked here, with an error naming the keys).
  /// With a pipeline `stage`, this rank runs its stage of every micro-batch under the stage's
  /// schedule, and `group` holds the stage's data-parallel ranks.
  GradientStep(CausalLM& model, const TrainConfig& config, std::shared_ptr<ProcessGroup> group,
               PipelineStage* stage = nullptr);

  /// Runs this rank's rows (global_batch / dp, T) in micro-batches of train.micro_batch and
  /// leaves the mean gradient over the global batch in every parameter's .grad (under ZeRO-1 in
  /// default mode: this rank's mean, which the optimizer reduce-scatters). Returns the mean loss
  /// over the global batch (the same value on every rank). Gradients are of loss * loss_scale
  /// (fp16 loss scaling); the returned loss is not scaled.
  double run(const Batch& batch, double loss_scale = 1.0);
  /// Overlap accounting of the data-parallel all-reduce (default mode with several ranks).
  std::optional<DataParallel::Stats> communication() const;

 private:
  double run_pipeline(const Batch& batch, double loss_scale);

  CausalLM& model_;
  const TrainConfig& config_;
  std::shared_ptr<ProcessGroup> group_;
  PipelineStage* stage_;
  std::unique_ptr<DataParallel> data_parallel_;       // default mode, several ranks
  std::unique_ptr<TreeGradientAccumulator> tree_;     // deterministic mode
};

}  // namespace tsumugi

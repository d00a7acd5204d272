#pragma once
// Internal: the trainer's optimizer, replicated AdamW or ZeRO-1, behind one interface. Both
// clip with the same coefficient and update with the same arithmetic.
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/core/optim.h>
#include <tsumugi/dist/pipeline_stage.h>
#include <tsumugi/dist/zero.h>
#include <tsumugi/train/config.h>

#include <memory>

namespace tsumugi {

class TrainerOptimizer {
 public:
  /// ZeRO-1 when parallel.zero = 1 and the group has several ranks. With ZeRO in default mode,
  /// .grad holds each rank's own mean gradient and `gradient_norm` reduce-scatters it.
  ///
  /// With a pipeline `stage`, only the stage's parameters are updated, the gradient norm is the
  /// whole model's (over all stages), and ZeRO-1 shards the stage's state over `group` (the
  /// stage's data-parallel ranks) from gradients already reduced there.
  TrainerOptimizer(CausalLM& model, const TrainConfig& config, std::shared_ptr<ProcessGroup> group,
                   const PipelineStage* stage = nullptr);
  bool sharded() const { return zero_ != nullptr; }
  void set_lr(double lr);
  /// The global gradient norm before clipping (collective under ZeRO), in the loss's units.
  double gradient_norm();
  /// What to multiply the loss by before backward: the fp16 loss scale, else 1.
  double loss_scale() const { return scaler_ ? scaler_->scale() : 1.0; }
  /// fp16: whether this step's scaled gradients are finite; an overflow backs the scale off and
  /// clears the gradients (the step is skipped, as torch.amp.GradScaler does). Always true otherwise.
  bool gradients_fit();
  /// Clips by train.grad_clip and updates the weights; then clears the gradients.
  void step(double norm);
  /// Clears the gradients without an update.
  void skip();
  /// AdamW's state format, whatever the sharding (collective under ZeRO), on the CPU.
  StateDict state_dict();
  /// The model's weights as a checkpoint stores them: fp32 on the CPU, from the optimizer's
  /// master copies when the model computes in bf16/f16 (collective under ZeRO).
  StateDict model_weights(const CausalLM& model) const;
  /// Seeds the fp32 master weights of a bf16/f16 model from `weights` (fp32, before conversion), so
  /// that the run starts from exactly the fp32 initialisation.
  void load_master_weights(const StateDict& weights);
  void load_state_dict(const StateDict& state);

 private:
  std::vector<Tensor> params_;
  const PipelineStage* stage_;
  double grad_clip_;
  double grad_scale_ = 1.0;  // ZeRO default mode: 1 / ranks
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<ZeroAdamW> zero_;
  std::unique_ptr<DynamicLossScaler> scaler_;  // f16 only
  std::shared_ptr<ProcessGroup> flag_group_;   // ZeRO-1 in default mode: agrees on fp16 overflows
};

}  // namespace tsumugi

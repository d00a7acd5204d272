#pragma once
// Internal: the trainer's optimizer, replicated AdamW or ZeRO-1, behind one interface. Both
// clip with the same coefficient and update with the same arithmetic.
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/core/optim.h>
#include <tsumugi/dist/zero.h>
#include <tsumugi/train/config.h>

#include <memory>

namespace tsumugi {

class TrainerOptimizer {
 public:
  /// ZeRO-1 when parallel.zero = 1 and the group has several ranks. With ZeRO in default mode,
  /// .grad holds each rank's own mean gradient and `gradient_norm` reduce-scatters it.
  TrainerOptimizer(CausalLM& model, const TrainConfig& config, std::shared_ptr<ProcessGroup> group);
  bool sharded() const { return zero_ != nullptr; }
  void set_lr(double lr);
  /// The global gradient norm before clipping (collective under ZeRO).
  double gradient_norm();
  /// Clips by train.grad_clip and updates the weights; then clears the gradients.
  void step(double norm);
  /// Clears the gradients without an update.
  void skip();
  /// AdamW's state format, whatever the sharding (collective under ZeRO), on the CPU.
  StateDict state_dict();
  /// The model's weights as a checkpoint stores them: fp32 on the CPU, from the optimizer's
  /// master copies when the model computes in bf16/f16.
  StateDict model_weights(const CausalLM& model) const;
  void load_state_dict(const StateDict& state);

 private:
  std::vector<Tensor> params_;
  double grad_clip_;
  double grad_scale_ = 1.0;  // ZeRO default mode: 1 / ranks
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<ZeroAdamW> zero_;
};

}  // namespace tsumugi

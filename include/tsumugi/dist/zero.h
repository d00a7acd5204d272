#pragma once
/// ZeRO stage 1 (Rajbhandari et al. 2020): AdamW whose moments are sharded over the data-parallel
/// ranks. The parameters, concatenated in registration order, are cut into one contiguous shard
/// per rank. Each step: gradients are reduce-scattered (each rank gets its shard of the sum),
/// the global norm is all-reduced for clipping, every rank updates its shard with the same AdamW
/// arithmetic as the replicated optimizer, and the parameters are all-gathered.
///
/// In deterministic mode the gradients arrive already summed by the tree accumulator; each rank
/// then takes its slice, and the result is bitwise the replicated optimizer's.
#include <tsumugi/core/optim.h>
#include <tsumugi/dist/process_group.h>

#include <memory>
#include <vector>

namespace tsumugi {

class ZeroAdamW {
 public:
  /// `gradients_reduced`: .grad already holds the global (scaled) gradient on every rank.
  ZeroAdamW(const NamedTensors& params, AdamWOptions options, std::shared_ptr<ProcessGroup> group,
            bool gradients_reduced);

  /// Builds this rank's shard of the gradient: the sum over ranks times `grad_scale` (or, when
  /// the gradients are already reduced, their slice). Returns the global L2 norm. Collective.
  double reduce_gradients(double grad_scale);
  /// Scales the shard by `clip_scale` (1: no clipping), updates it with AdamW and all-gathers
  /// the parameters. Collective.
  void update(double clip_scale);
  void zero_grad();
  void set_lr(double lr) { options_.lr = lr; }
  int64_t steps() const { return step_; }
  /// The full optimizer state, gathered from every rank, in AdamW's format (loads into any
  /// rank count, with or without ZeRO). Collective.
  StateDict state_dict() const;
  /// Takes this rank's shard of a full AdamW state.
  void load_state_dict(const StateDict& state);

  /// [begin, end) of this rank's shard in the concatenated parameters.
  std::pair<int64_t, int64_t> shard() const { return {begin_, end_}; }

 private:
  NamedTensors params_;
  std::vector<int64_t> offsets_;  // of each parameter in the concatenation
  AdamWOptions options_;
  std::shared_ptr<ProcessGroup> group_;
  bool gradients_reduced_;
  int64_t total_ = 0, chunk_ = 0, begin_ = 0, end_ = 0;
  Tensor exp_avg_, exp_avg_sq_;  // (chunk_) this rank's moments
  Tensor grad_shard_;            // (chunk_)
  int64_t step_ = 0;
};

}  // namespace tsumugi

#pragma once
/// ZeRO stage 1 (Rajbhandari et al. 2020): AdamW whose moments (and, for bf16/f16 parameters,
/// fp32 master weights) are sharded over the data-parallel ranks. The parameters, concatenated in
/// registration order, are cut into one contiguous shard per rank. Each step: gradients are
/// reduce-scattered (each rank gets its shard of the sum), the global norm is all-reduced for
/// clipping, every rank updates its shard with the same AdamW arithmetic as the replicated
/// optimizer, and the parameters are all-gathered (in their own dtype).
///
/// Parameters are contiguous f32, bf16 or f16 tensors on one device, the CPU or a GPU; the shard's
/// state lives there too, and the group must move tensors of that device and one host scalar per
/// step (the squared norm): MPI for the CPU, device_aware_group(MPI, NCCL) for a GPU. With f32
/// parameters each rank keeps 2/R of the replicated optimizer's state; with bf16/f16 parameters
/// 3/R (the master weights are sharded as well).
///
/// In deterministic mode the gradients arrive already summed by the tree accumulator; each rank
/// then takes its slice, and the result is bitwise the replicated optimizer's (AdamW with the same
/// parameters), for any rank count, in every precision.
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

  /// Builds this rank's shard of the gradient: the sum over ranks (or, when the gradients are
  /// already reduced, their slice). Returns the global L2 norm of that gradient times
  /// |grad_scale|; the update then uses gradient * grad_scale (pass 1 / ranks to average, and
  /// divide by an fp16 loss scale). Collective.
  double reduce_gradients(double grad_scale);
  /// Updates the shard from gradient * grad_scale * clip_scale (1: no clipping) with AdamW and
  /// all-gathers the parameters. Collective.
  void update(double clip_scale);
  void zero_grad();
  void set_lr(double lr) { options_.lr = lr; }
  int64_t steps() const { return step_; }
  /// The full optimizer state, gathered from every rank, in AdamW's format (moments by name,
  /// "step", "master.<name>" for bf16/f16 parameters), on the parameters' device: it loads into
  /// any rank count, with or without ZeRO. Collective.
  StateDict state_dict() const;
  /// Takes this rank's shard of a full AdamW state (any device). Master weights in it also set
  /// the bf16/f16 parameters to their rounded values, as AdamW::load_state_dict does.
  void load_state_dict(const StateDict& state);
  /// The fp32 weights of every parameter by name, as AdamW::master_weights: the gathered master
  /// copies of bf16/f16 parameters, f32 parameters themselves. Collective.
  StateDict master_weights() const;
  /// As AdamW::load_master_weights: the master weights of the bf16/f16 parameters named in
  /// `weights` (the parameters' shapes, any dtype and device) and those parameters rounded.
  void load_master_weights(const StateDict& weights);

  /// [begin, end) of this rank's shard in the concatenated parameters.
  std::pair<int64_t, int64_t> shard() const { return {begin_, end_}; }

 private:
  // Fills the master shard from the parameters where it is not valid (all of it at the first
  // step; f32 parameters at every step, as they are their own master copy).
  void refresh_master(bool f32_only) const;

  NamedTensors params_;
  std::vector<int64_t> offsets_;  // of each parameter in the concatenation
  AdamWOptions options_;
  std::shared_ptr<ProcessGroup> group_;
  bool gradients_reduced_;
  Device device_ = Device::cpu();
  DType gather_dtype_ = DType::f32;  // the parameters' dtype when they share one, else f32
  bool low_precision_ = false;       // some parameter is bf16/f16
  int64_t total_ = 0, chunk_ = 0, begin_ = 0, end_ = 0;
  Tensor exp_avg_, exp_avg_sq_;  // (chunk_) this rank's moments
  mutable Tensor master_;        // (chunk_) this rank's fp32 weights
  mutable bool master_valid_ = false;
  Tensor grad_shard_;  // (chunk_)
  double grad_scale_ = 1.0;
  int64_t step_ = 0;
};

}  // namespace tsumugi

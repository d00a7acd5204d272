#pragma once
/// Data parallelism: every rank holds the whole model, runs its own slice of the global batch,
/// and gradients are averaged over the ranks before the optimizer step.
///
/// Default mode: gradients are grouped into buckets in reverse parameter order and each bucket
/// is all-reduced on a communication thread as soon as the backward pass has filled it, so
/// communication overlaps the rest of the backward. No communication happens on the non-final
/// micro-batches of an accumulation (set_gradient_sync(false)). The parameters may live on any
/// one device and be of any floating dtype: gradients travel as f32 on that device, so a GPU
/// model needs a group that moves device tensors (nccl_group, or device_aware_group).
///
/// Deterministic mode (TreeGradientAccumulator): per-micro-batch gradients are summed in one
/// balanced binary tree over the global micro-batch index, pairwise on each rank then across
/// ranks by recursive doubling, so the result is bitwise the same for 1, 2, 4, ... ranks.
#include <tsumugi/core/nn/module.h>
#include <tsumugi/dist/process_group.h>

#include <memory>
#include <vector>

namespace tsumugi {

struct DataParallelOptions {
  int64_t bucket_bytes = 25 << 20;  ///< gradient bytes per all-reduce
};

class DataParallel {
 public:
  /// Hooks every parameter of `module`; the module must outlive this object.
  DataParallel(Module& module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {});
  /// Only these parameters (a pipeline stage's); they must outlive this object.
  DataParallel(const NamedTensors& params, std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Whether the next backward pass communicates: false on all but the last micro-batch.
  void set_gradient_sync(bool on);
  /// After the last backward of a step: waits for every bucket and leaves the mean over ranks of
  /// each parameter's gradient in its .grad.
  void synchronize_gradients();

  /// Communication accounting since construction (or reset_stats).
  struct Stats {
    double communication_seconds = 0;  ///< time the all-reduces took on the communication thread
    double exposed_seconds = 0;        ///< time synchronize_gradients waited for them
    int64_t bytes = 0;                 ///< gradient bytes all-reduced
    int64_t buckets = 0;
  };
  Stats stats() const;
  void reset_stats();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Makes every rank's parameters rank 0's (broadcast), then checks that the checksums agree;
/// throws DistError naming a rank that differs.
void broadcast_parameters(Module& module, ProcessGroup& group);
/// A checksum of the parameters' bytes in registration order.
uint64_t parameter_checksum(const Module& module);

/// Sums per-micro-batch gradients in a balanced binary tree: call add() after each micro-batch's
/// backward (it takes every parameter's .grad and clears it), then finish() once per step.
class TreeGradientAccumulator {
 public:
  explicit TreeGradientAccumulator(std::vector<Tensor> params);
  /// Takes the current gradients (a missing one counts as zeros) as the next leaf of the tree.
  void add();
  /// Sums the leaves added since the last finish (their count a power of two for layout
  /// independence), all-reduces the sum over `group` with the same tree, multiplies by `scale`
  /// and writes the result into the parameters' .grad.
  void finish(ProcessGroup& group, double scale);

 private:
  std::vector<Tensor> params_;
  int64_t total_ = 0;
  std::vector<std::pair<int, Tensor>> stack_;  // (level, flat gradient)
};

}  // namespace tsumugi

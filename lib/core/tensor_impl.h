#pragma once
// Internal: what a Tensor handle points to.
#include <tsumugi/core/tensor.h>

#include "storage.h"

namespace tsumugi {

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  Tensor grad;                    // accumulated gradient of a leaf
  bool grad_owned = false;        // grad is ours to update in place
  std::shared_ptr<Node> grad_fn;  // the op that produced this tensor (null for leaves)
  int output_nr = 0;              // which output of grad_fn this is
  std::function<void(const Tensor&)> grad_ready_hook;  // leaves: called when a backward's gradient is complete

  Device device() const { return storage ? storage->device() : Device::cpu(); }
};

/// A new tensor over existing storage.
Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset);
/// Wraps a fresh TensorImpl.
Tensor make_tensor(std::shared_ptr<Storage> storage, Shape shape, Strides strides, int64_t offset,
                   DType dtype);
/// Normalises a possibly negative dimension index; throws IndexError naming `op`.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace tsumugi

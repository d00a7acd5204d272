#pragma once
/// Tensor: a cheap handle to shared storage with a shape, strides, an offset, a dtype and a
/// device. Views (reshape, transpose, slice, ...) share storage with their source. Every tensor
/// can take part in autograd: ops on tensors that require grad record a node on the tape.
#include <tsumugi/core/device.h>
#include <tsumugi/core/dtype.h>
#include <tsumugi/core/error.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace tsumugi {

/// Sizes of each dimension, outermost first.
using Shape = std::vector<int64_t>;
/// Steps, in elements, between neighbours along each dimension.
using Strides = std::vector<int64_t>;

class Storage;
struct TensorImpl;
struct Node;

/// How to create a tensor: `zeros({2, 3}, {.dtype = DType::f64, .requires_grad = true})`.
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

/// Number of elements in a shape (1 for a scalar shape {}).
int64_t shape_numel(const Shape& shape);
/// "(4, 8)"; used in every error message about shapes.
std::string shape_str(const Shape& shape);
/// Row-major (C-order) strides of a shape.
Strides contiguous_strides(const Shape& shape);

class Tensor {
 public:
  /// An undefined tensor; most operations on it throw.
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Strides& strides() const;
  /// Size of dimension `dim`; negative counts from the end.
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const;
  int64_t numel() const;
  int64_t offset() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  bool is_contiguous() const;
  /// True when this and `other` are views of the same memory.
  bool shares_storage(const Tensor& other) const;

  /// Address of the first element (storage + offset).
  void* data_ptr() const;
  /// Typed address of the first element; throws when T does not match the dtype.
  template <class T>
  T* data() const;
  /// The value of a one-element tensor, converted to T (copies from the GPU if needed).
  template <class T>
  T item() const;
  /// All elements in row-major order, converted to T.
  template <class T>
  std::vector<T> to_vector() const;

  // ---- views: share storage, record a node for autograd ----
  /// Same data with another shape; needs compatible strides. One size may be -1.
  Tensor view(Shape shape) const;
  /// Like view, but copies when the strides do not allow a view.
  Tensor reshape(Shape shape) const;
  Tensor flatten() const { return reshape({-1}); }
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  /// Transpose of a 2-D tensor.
  Tensor t() const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  /// Elements start, start + step, ... < end along dim (negative start/end count from the end).
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  /// Index `index` of dimension `dim`, removing that dimension.
  Tensor select(int64_t dim, int64_t index) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  /// Broadcast size-1 dimensions to `shape` without copying (stride 0).
  Tensor expand(const Shape& shape) const;
  /// This tensor when already contiguous, else a contiguous copy.
  Tensor contiguous() const;
  /// A contiguous copy with its own storage.
  Tensor clone() const;
  /// Converted to another dtype (a copy unless already that dtype).
  Tensor to(DType dtype) const;
  /// Moved to another device (a copy unless already there). `non_blocking` returns before a copy
  /// from pinned host memory to a GPU has finished (later GPU work on the tensor waits for it).
  Tensor to(Device device, bool non_blocking = false) const;
  /// A copy in page-locked host memory, which GPUs read asynchronously (needs a CUDA device).
  Tensor pin_memory() const;
  /// True for CPU tensors in page-locked memory.
  bool is_pinned() const;

  // ---- autograd ----
  bool requires_grad() const;
  /// Marks a leaf tensor as a parameter that collects gradients; returns *this.
  Tensor& set_requires_grad(bool requires_grad = true);
  /// Accumulated gradient (undefined until a backward pass reaches this tensor).
  Tensor grad() const;
  void set_grad(const Tensor& grad) const;
  /// Drops the accumulated gradient.
  void zero_grad() const;
  /// True for tensors that no recorded op produced.
  bool is_leaf() const;
  /// Name of the op that produced this tensor ("" for leaves).
  std::string grad_fn_name() const;
  /// Back-propagates from this tensor. A non-scalar needs `gradient` of the same shape.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  /// Same storage, cut from the tape, never requires grad.
  Tensor detach() const;
  /// Calls `hook(tensor)` during each backward pass, once this leaf's gradient for that pass is
  /// complete (all its uses have contributed). Data parallelism starts communication from here.
  void set_grad_ready_hook(std::function<void(const Tensor&)> hook) const;

  // ---- in-place, for optimizers and initialisation; refused on tensors autograd tracks ----
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  /// Copies `src` (broadcast to this shape, converted to this dtype) into this tensor.
  Tensor& copy_(const Tensor& src);

  /// Readable rendering: shape, dtype, device and the values (elided when large).
  std::string str() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& tensor);

// ---- creation ----
/// Uninitialised memory.
Tensor empty(const Shape& shape, TensorOptions options = {});
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor empty_like(const Tensor& like);
Tensor zeros_like(const Tensor& like);
Tensor ones_like(const Tensor& like);
/// start, start + step, ... < end, as a 1-D tensor (default dtype i64).
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {.dtype = DType::i64});
Tensor arange(int64_t end, TensorOptions options = {.dtype = DType::i64});
/// A tensor holding a copy of `values` with `shape` (1-D when no shape is given).
template <class T>
Tensor from_data(const std::vector<T>& values, Shape shape = {}, TensorOptions options = {.dtype = dtype_of<T>()});
/// A 0-dimensional tensor.
Tensor scalar_tensor(double value, TensorOptions options = {});

/// Bytes of memory held by tsumugi's CPU caching allocator: in use, reserved, peak in use.
struct MemoryStats {
  int64_t allocated = 0;
  int64_t reserved = 0;
  int64_t peak_allocated = 0;
};
MemoryStats memory_stats(Device device = Device::cpu());
/// Returns cached, unused blocks to the system.
void empty_cache(Device device = Device::cpu());
/// Peak resident memory of this process (all of it, not only tensors), in MiB.
double peak_rss_mb();

}  // namespace tsumugi

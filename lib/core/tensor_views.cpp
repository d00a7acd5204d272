// Views: new shapes and strides over the same storage. Each records its backward.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <numeric>

#include "autograd_graph.h"
#include "check.h"

namespace tsumugi {
namespace {

Shape infer_shape(Shape shape, int64_t numel, const char* op) {
  int64_t known = 1;
  int64_t infer_at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      TSU_CHECK(infer_at < 0, ValueError, "[{}] only one dimension can be -1 in {}", op, shape_str(shape));
      infer_at = static_cast<int64_t>(d);
    } else {
      TSU_CHECK(shape[d] >= 0, ValueError, "[{}] invalid size in {}", op, shape_str(shape));
      known *= shape[d];
    }
  }
  if (infer_at >= 0) {
    TSU_CHECK(known != 0 && numel % known == 0, ValueError, "[{}] cannot infer -1 in {} for {} elements", op,
              shape_str(shape), numel);
    shape[infer_at] = numel / known;
  }
  TSU_CHECK(shape_numel(shape) == numel, ValueError, "[{}] shape {} does not hold {} elements", op, shape_str(shape),
            numel);
  return shape;
}

// Strides that let `shape` view memory laid out as (old_shape, old_strides); empty if impossible.
Strides view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& shape) {
  if (shape_numel(shape) == 0) return contiguous_strides(shape);
  Strides strides(shape.size());
  // Walk chunks of old dimensions that are contiguous with each other; each chunk must map to a
  // run of new dimensions with the same element count.
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1;
  int64_t view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[d];
    if (d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return {};
      if (d > 0) {
        chunk_base_stride = old_strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) {
    // Remaining size-1 dimensions.
    for (; view_d >= 0; --view_d) {
      if (shape[view_d] != 1) return {};
      strides[view_d] = 1;
    }
  }
  return strides;
}

std::vector<Tensor> one(Tensor g) { return {std::move(g)}; }

}  // namespace

Tensor Tensor::view(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "view");
  Strides strides = this->shape().empty() ? contiguous_strides(shape) : view_strides(this->shape(), this->strides(), shape);
  TSU_CHECK(!strides.empty() || shape.empty(), ValueError,
            "[view] cannot view a tensor of shape {} with strides ({}) as {}; use reshape()", shape_str(this->shape()),
            fmt::join(this->strides(), ", "), shape_str(shape));
  Tensor out = make_view(*this, shape, strides, offset());
  if (needs_grad({this})) {
    Shape in_shape = this->shape();
    record("view", {*this}, out, [in_shape](const Tensor& g) { return one(g.reshape(in_shape)); });
  }
  return out;
}

Tensor Tensor::reshape(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), "reshape");
  if (this->shape().empty() || !view_strides(this->shape(), strides(), shape).empty()) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  std::vector<int64_t> dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(dim0, dim(), "transpose")], dims[wrap_dim(dim1, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::t() const {
  TSU_CHECK(dim() == 2, ValueError, "[t] expects a 2-d tensor, got shape {}", shape_str(shape()));
  return transpose(0, 1);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  TSU_CHECK(static_cast<int64_t>(dims.size()) == dim(), ValueError, "[permute] {} dims given for a {}-d tensor",
            dims.size(), dim());
  Shape shape(dims.size());
  Strides strides(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], dim(), "permute");
    TSU_CHECK(inverse[d] < 0, ValueError, "[permute] dimension {} repeated in ({})", d, fmt::join(dims, ", "));
    inverse[d] = static_cast<int64_t>(i);
    shape[i] = this->shape()[d];
    strides[i] = this->strides()[d];
  }
  Tensor out = make_view(*this, shape, strides, offset());
  if (needs_grad({this}))
    record("permute", {*this}, out, [inverse](const Tensor& g) { return one(g.permute(inverse)); });
  return out;
}

Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  dim = wrap_dim(dim, this->dim(), "slice");
  const int64_t size = shape()[dim];
  TSU_CHECK(step > 0, ValueError, "[slice] step must be positive, got {}", step);
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  Shape shape = this->shape();
  Strides strides = this->strides();
  shape[dim] = (end - start + step - 1) / step;
  strides[dim] *= step;
  Tensor out = make_view(*this, shape, strides, offset() + start * this->strides()[dim]);
  if (needs_grad({this})) {
    Shape in_shape = this->shape();
    record("slice", {*this}, out, [in_shape, dim, start, end, step](const Tensor& g) {
      Tensor full_grad = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
      NoGradGuard no_grad;
      full_grad.slice(dim, start, end, step).copy_(g);
      return one(full_grad);
    });
  }
  return out;
}

Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  const int64_t d = wrap_dim(dim, this->dim(), "narrow");
  TSU_CHECK(start >= 0 && length >= 0 && start + length <= shape()[d], IndexError,
            "[narrow] range [{}, {}) out of bounds for dimension {} of size {}", start, start + length, d, shape()[d]);
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t dim, int64_t index) const {
  const int64_t d = wrap_dim(dim, this->dim(), "select");
  const int64_t size = shape()[d];
  const int64_t i = index < 0 ? index + size : index;
  TSU_CHECK(i >= 0 && i < size, IndexError, "[select] index {} out of range for dimension {} of size {}", index, d,
            size);
  return slice(d, i, i + 1).squeeze(d);
}

Tensor Tensor::unsqueeze(int64_t dim) const {
  const int64_t d = wrap_dim(dim, this->dim() + 1, "unsqueeze");
  Shape shape = this->shape();
  shape.insert(shape.begin() + d, 1);
  return view(shape);
}

Tensor Tensor::squeeze(int64_t dim) const {
  const int64_t d = wrap_dim(dim, this->dim(), "squeeze");
  if (shape()[d] != 1) return *this;
  Shape shape = this->shape();
  shape.erase(shape.begin() + d);
  return view(shape);
}

Tensor Tensor::expand(const Shape& shape) const {
  TSU_CHECK(shape.size() >= this->shape().size(), ValueError, "[expand] cannot expand {} to {}",
            shape_str(this->shape()), shape_str(shape));
  const size_t lead = shape.size() - this->shape().size();
  Strides strides(shape.size(), 0);
  for (size_t d = 0; d < this->shape().size(); ++d) {
    const int64_t have = this->shape()[d];
    const int64_t want = shape[lead + d];
    TSU_CHECK(have == want || have == 1, ValueError, "[expand] cannot expand {} to {}", shape_str(this->shape()),
              shape_str(shape));
    strides[lead + d] = have == want ? this->strides()[d] : 0;
  }
  if (shape == this->shape()) return *this;
  Tensor out = make_view(*this, shape, strides, offset());
  if (needs_grad({this})) {
    Shape in_shape = this->shape();
    record("expand", {*this}, out, [in_shape](const Tensor& g) { return one(sum_to(g, in_shape)); });
  }
  return out;
}

}  // namespace tsumugi

// Reductions: sum, mean, max, argmax, sum_to.
//
// Every reduction views its input as (outer, reduced, inner) and sums each output element in
// index order on one thread, so results do not depend on the thread count. f32 sums accumulate
// in double. On CUDA (reduce.cu) sums accumulate in float, in a fixed tree order.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <algorithm>
#include <limits>

#include "../autograd_graph.h"
#include "../elementwise.h"
#include "reduce_cuda.h"

namespace tsumugi {
namespace {

struct ReducePlan {
  Tensor x;  // contiguous, with the reduced dimensions adjacent
  int64_t outer = 1, reduced = 1, inner = 1;
  Shape out_shape;       // with keepdim
  Shape squeezed_shape;  // without keepdim
};

std::vector<int64_t> normalize_dims(std::vector<int64_t> dims, int64_t ndim, const char* op) {
  if (dims.empty()) {
    for (int64_t d = 0; d < ndim; ++d) dims.push_back(d);
  }
  for (int64_t& d : dims) d = wrap_dim(d, ndim, op);
  std::sort(dims.begin(), dims.end());
  TSU_CHECK(std::adjacent_find(dims.begin(), dims.end()) == dims.end(), ValueError, "[{}] repeated dimension", op);
  return dims;
}

ReducePlan plan_reduction(const Tensor& input, const std::vector<int64_t>& dims) {
  const int64_t ndim = input.dim();
  ReducePlan plan;
  std::vector<bool> reduce(static_cast<size_t>(ndim), false);
  for (int64_t d : dims) reduce[d] = true;
  plan.out_shape = input.shape();
  for (int64_t d = 0; d < ndim; ++d) {
    if (reduce[d]) plan.out_shape[d] = 1;
    else plan.squeezed_shape.push_back(input.shape()[d]);
  }
  const bool adjacent = dims.empty() || dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  Tensor x = input.detach();
  if (adjacent) {
    x = x.contiguous();
    for (int64_t d = 0; d < ndim; ++d) {
      if (!dims.empty() && d < dims.front()) plan.outer *= x.shape()[d];
      else if (reduce[d]) plan.reduced *= x.shape()[d];
      else plan.inner *= x.shape()[d];
    }
  } else {  // move the reduced dimensions last, then copy
    std::vector<int64_t> order;
    for (int64_t d = 0; d < ndim; ++d)
      if (!reduce[d]) order.push_back(d);
    for (int64_t d : dims) order.push_back(d);
    x = x.permute(order).contiguous();
    for (int64_t d = 0; d < ndim; ++d) (reduce[d] ? plan.reduced : plan.outer) *= input.shape()[d];
  }
  plan.x = x;
  return plan;
}

// out[o, i] = sum_r x[o, r, i], accumulated in Acc.
template <class T>
void sum_kernel(const T* x, T* out, int64_t outer, int64_t reduced, int64_t inner) {
  using Acc = double;
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * reduced > kParallelGrain)
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * reduced;
      Acc acc = 0;
      for (int64_t r = 0; r < reduced; ++r) acc += row[r];
      out[o] = static_cast<T>(acc);
    }
    return;
  }
  constexpr int64_t kBlock = 256;  // columns per task
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (outer * reduced * inner > kParallelGrain)
  for (int64_t task = 0; task < outer * blocks; ++task) {
    const int64_t o = task / blocks;
    const int64_t i0 = (task % blocks) * kBlock;
    const int64_t width = std::min(kBlock, inner - i0);
    Acc acc[kBlock] = {};
    for (int64_t r = 0; r < reduced; ++r) {
      const T* row = x + (o * reduced + r) * inner + i0;
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) acc[i] += row[i];
    }
    for (int64_t i = 0; i < width; ++i) out[o * inner + i0 + i] = static_cast<T>(acc[i]);
  }
}

Tensor sum_impl(const Tensor& input, const std::vector<int64_t>& dims, bool keepdim) {
  const ReducePlan plan = plan_reduction(input, dims);
  Tensor out = empty(keepdim ? plan.out_shape : plan.squeezed_shape, {.dtype = input.dtype(), .device = input.device()});
#ifdef TSUMUGI_WITH_CUDA
  if (input.device().is_cuda()) {
    cuda::sum_reduce(out, plan.x, plan.outer, plan.reduced, plan.inner);
    return out;
  }
#endif
  dispatch_float(input.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    sum_kernel<T>(plan.x.data<T>(), out.data<T>(), plan.outer, plan.reduced, plan.inner);
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  dims = normalize_dims(std::move(dims), x.dim(), "sum");
  Tensor out = sum_impl(x, dims, keepdim);
  if (needs_grad({&x})) {
    Shape keep_shape = x.shape();
    for (int64_t d : dims) keep_shape[d] = 1;
    record("sum", {x}, out, [in_shape = x.shape(), keep_shape](const Tensor& g) {
      return std::vector<Tensor>{g.reshape(keep_shape).expand(in_shape).contiguous()};
    });
  }
  return out;
}

Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  dims = normalize_dims(std::move(dims), x.dim(), "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[d];
  return sum(x, dims, keepdim) * (1.0 / static_cast<double>(std::max<int64_t>(count, 1)));
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  TSU_CHECK(shape.size() <= x.shape().size(), ValueError, "[sum_to] cannot sum {} to {}", shape_str(x.shape()),
            shape_str(shape));
  const size_t lead = x.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < x.shape().size(); ++d) {
    if (d < lead) {
      dims.push_back(static_cast<int64_t>(d));
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      dims.push_back(static_cast<int64_t>(d));
    } else {
      TSU_CHECK(shape[d - lead] == x.shape()[d], ValueError, "[sum_to] cannot sum {} to {}", shape_str(x.shape()),
                shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

namespace {

// Values and (first) indices of the maxima along one dimension.
std::pair<Tensor, Tensor> max_impl(const Tensor& input, int64_t dim, bool keepdim, const char* op) {
  TSU_CHECK(input.numel() > 0, ValueError, "[{}] empty tensor", op);
  const ReducePlan plan = plan_reduction(input, {dim});
  const Shape shape = keepdim ? plan.out_shape : plan.squeezed_shape;
  Tensor values = empty(shape, {.dtype = input.dtype(), .device = input.device()});
  Tensor indices = empty(shape, {.dtype = DType::i64, .device = input.device()});
#ifdef TSUMUGI_WITH_CUDA
  if (input.device().is_cuda()) {
    cuda::max_reduce(values, indices, plan.x, plan.outer, plan.reduced, plan.inner);
    return {values, indices};
  }
#endif
  dispatch_float(input.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* x = plan.x.data<T>();
    T* v = values.data<T>();
    int64_t* idx = indices.data<int64_t>();
    const int64_t outer = plan.outer, reduced = plan.reduced, inner = plan.inner;
#pragma omp parallel for schedule(static) if (outer * reduced * inner > kParallelGrain)
    for (int64_t oi = 0; oi < outer * inner; ++oi) {
      const int64_t o = oi / inner, i = oi % inner;
      T best = x[o * reduced * inner + i];
      int64_t best_r = 0;
      for (int64_t r = 1; r < reduced; ++r) {
        const T value = x[(o * reduced + r) * inner + i];
        if (value > best || (value != value && best == best)) {  // NaN wins, as in PyTorch
          best = value;
          best_r = r;
        }
      }
      v[oi] = best;
      idx[oi] = best_r;
    }
  });
  return {values, indices};
}

}  // namespace

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim(), "max");
  auto [values, indices] = max_impl(x, dim, keepdim, "max");
  if (needs_grad({&x})) {
    record("max", {x}, values, [in_shape = x.shape(), dim, indices, keepdim](const Tensor& g) {
      Tensor grad = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
      const Tensor gk = keepdim ? g.contiguous() : g.unsqueeze(dim).contiguous();
      const Tensor ik = keepdim ? indices : indices.unsqueeze(dim).contiguous();
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < dim; ++d) outer *= in_shape[d];
      for (size_t d = static_cast<size_t>(dim) + 1; d < in_shape.size(); ++d) inner *= in_shape[d];
      const int64_t reduced = in_shape[dim];
#ifdef TSUMUGI_WITH_CUDA
      if (g.device().is_cuda()) {
        cuda::max_reduce_backward(grad, gk, ik, outer, reduced, inner);
        return std::vector<Tensor>{grad};
      }
#endif
      dispatch_float(g.dtype(), "max", [&](auto tag) {
        using T = decltype(tag);
        T* out = grad.data<T>();
        const T* gv = gk.data<T>();
        const int64_t* iv = ik.data<int64_t>();
        for (int64_t oi = 0; oi < outer * inner; ++oi) {
          const int64_t o = oi / inner, i = oi % inner;
          out[(o * reduced + iv[oi]) * inner + i] = gv[oi];
        }
      });
      return std::vector<Tensor>{grad};
    });
  }
  return values;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return max_impl(x, wrap_dim(dim, x.dim(), "argmax"), keepdim, "argmax").second;
}

}  // namespace tsumugi

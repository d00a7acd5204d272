#pragma once
// Internal: elementwise kernels shared by forward and backward formulas (no autograd here).
#include <tsumugi/core/tensor.h>

#include <omp.h>

#include "dispatch.h"

namespace tsumugi {

/// Shape that a and b broadcast to; throws ValueError naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

/// Elements per OpenMP task below which a loop runs on one thread.
constexpr int64_t kParallelGrain = 32768;

/// out[i] = f(x[i]) over a contiguous float tensor (f32 or f64), in a new tensor.
template <class F>
Tensor map1(const char* op, const Tensor& x_in, F&& f) {
  const Tensor x = x_in.contiguous();
  Tensor out = empty_like(x);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* in = x.data<T>();
    T* o = out.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(in[i]);
  });
  return out;
}

/// out[i] = f(a[i], b[i]) for same-shape float tensors, in a new tensor.
template <class F>
Tensor map2(const char* op, const Tensor& a_in, const Tensor& b_in, F&& f) {
  TSU_CHECK(a_in.shape() == b_in.shape(), ValueError, "[{}] shapes differ: {} vs {}", op, shape_str(a_in.shape()),
            shape_str(b_in.shape()));
  TSU_CHECK(a_in.dtype() == b_in.dtype(), ValueError, "[{}] dtypes differ: {} vs {}", op, dtype_name(a_in.dtype()),
            dtype_name(b_in.dtype()));
  const Tensor a = a_in.contiguous();
  const Tensor b = b_in.contiguous();
  Tensor out = empty_like(a);
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* o = out.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i]);
  });
  return out;
}

/// out[i] = f(a[i], b[i], c[i]) for same-shape float tensors, in a new tensor.
template <class F>
Tensor map3(const char* op, const Tensor& a_in, const Tensor& b_in, const Tensor& c_in, F&& f) {
  TSU_CHECK(a_in.shape() == b_in.shape() && a_in.shape() == c_in.shape(), ValueError, "[{}] shapes differ: {}, {}, {}",
            op, shape_str(a_in.shape()), shape_str(b_in.shape()), shape_str(c_in.shape()));
  const Tensor a = a_in.contiguous();
  const Tensor b = b_in.contiguous();
  const Tensor c = c_in.contiguous();
  Tensor out = empty_like(a);
  dispatch_float(a.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    const T* pc = c.data<T>();
    T* o = out.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) o[i] = f(pa[i], pb[i], pc[i]);
  });
  return out;
}

}  // namespace tsumugi

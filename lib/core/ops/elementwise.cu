// CUDA kernels of the elementwise ops: add, sub, mul, div with broadcasting over any strides, and
// the unary math ops with their derivatives. CPU reference: elementwise.cpp.
#include <cstdlib>

#include "elementwise.cuh"
#include "elementwise_cuda.h"

namespace tsumugi::cuda {
namespace {

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "?";
}

template <BinaryOp Op>
struct Arith {
  template <class A>
  __device__ __forceinline__ A operator()(A x, A y) const {
    if constexpr (Op == BinaryOp::add) return x + y;
    else if constexpr (Op == BinaryOp::sub) return x - y;
    else if constexpr (Op == BinaryOp::mul) return x * y;
    else return x / y;
  }
};

// The output's shape with both inputs' strides, after dropping size-1 dimensions and merging
// neighbours that are contiguous in both inputs (the output is always contiguous): (N, D) + (D)
// becomes two dimensions, same-shape dense inputs one.
template <class Index>
struct Broadcast {
  int ndim = 0;
  Index shape[kMaxDims] = {};
  Index stride_a[kMaxDims] = {};
  Index stride_b[kMaxDims] = {};
};

Broadcast<int64_t> collapse(const StridedLayout& la, const StridedLayout& lb) {
  Broadcast<int64_t> c;
  for (int d = 0; d < la.ndim; ++d) {
    const int64_t size = la.shape[d];
    if (size == 1) continue;
    const int last = c.ndim - 1;
    if (c.ndim > 0 && c.stride_a[last] == la.strides[d] * size && c.stride_b[last] == lb.strides[d] * size) {
      c.shape[last] *= size;
      c.stride_a[last] = la.strides[d];
      c.stride_b[last] = lb.strides[d];
    } else {
      c.shape[c.ndim] = size;
      c.stride_a[c.ndim] = la.strides[d];
      c.stride_b[c.ndim] = lb.strides[d];
      ++c.ndim;
    }
  }
  if (c.ndim == 0) {  // one element: strides stay 0
    c.ndim = 1;
    c.shape[0] = 1;
  }
  return c;
}

// 32-bit index arithmetic is several times cheaper than 64-bit divisions; use it when every index
// and offset fits with room to spare.
bool fits_int32(const Broadcast<int64_t>& l, int64_t n) {
  constexpr int64_t kLimit = int64_t(1) << 30;
  int64_t span_a = 0, span_b = 0;
  for (int d = 0; d < l.ndim; ++d) {
    span_a += (l.shape[d] - 1) * std::llabs(l.stride_a[d]);
    span_b += (l.shape[d] - 1) * std::llabs(l.stride_b[d]);
  }
  return n < kLimit && span_a < kLimit && span_b < kLimit;
}

Broadcast<int32_t> narrow_to_int32(const Broadcast<int64_t>& l) {
  Broadcast<int32_t> out;
  out.ndim = l.ndim;
  for (int d = 0; d < l.ndim; ++d) {
    out.shape[d] = static_cast<int32_t>(l.shape[d]);
    out.stride_a[d] = static_cast<int32_t>(l.stride_a[d]);
    out.stride_b[d] = static_cast<int32_t>(l.stride_b[d]);
  }
  return out;
}

// out[i] = f(a[offset_a(i)], b[offset_b(i)]) with out contiguous; the index is decomposed once for
// both inputs.
template <class T, class Index, class F>
__global__ void broadcast_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                                 Broadcast<Index> l, int64_t n, F f) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Index rest = static_cast<Index>(i), oa = 0, ob = 0;
    for (int d = l.ndim - 1; d > 0; --d) {
      const Index k = rest % l.shape[d];
      rest /= l.shape[d];
      oa += k * l.stride_a[d];
      ob += k * l.stride_b[d];
    }
    oa += rest * l.stride_a[0];  // rest < shape[0] here, since i < n
    ob += rest * l.stride_b[0];
    store_from(out + i, f(load_as<A>(a + oa), load_as<A>(b + ob)));
  }
}

template <class T, class F>
void launch_binary(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  const int64_t n = out.numel();
  const Broadcast<int64_t> l = collapse(layout_of(a, out.shape()), layout_of(b, out.shape()));
  if (l.ndim == 1 && l.stride_a[0] == 1 && l.stride_b[0] == 1) {  // same shape, both dense: vector loads
    launch_map<T, 2>(out, {a, b}, f);
    return;
  }
  constexpr int kThreads = 256;
  const unsigned blocks = blocks_for(n, kThreads);
  cudaStream_t s = stream_of(out);
  T* o = ptr<T>(out);
  const T* pa = ptr<const T>(a);
  const T* pb = ptr<const T>(b);
  if (fits_int32(l, n)) broadcast_kernel<T, int32_t><<<blocks, kThreads, 0, s>>>(o, pa, pb, narrow_to_int32(l), n, f);
  else broadcast_kernel<T, int64_t><<<blocks, kThreads, 0, s>>>(o, pa, pb, l, n, f);
  TSU_CUDA_CHECK_LAUNCH();
}

// ---- unary ops: forward f(x), backward g * f'(.) from x or from y = f(x), as the CPU writes it ----
template <class A>
struct Affine {
  A alpha, beta;
  __device__ __forceinline__ A operator()(A x) const { return x * alpha + beta; }
};
template <class A>
struct Pow {
  A exponent;
  __device__ __forceinline__ A operator()(A x) const { return math_pow(x, exponent); }
};
struct Exp {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return math_exp(x); }
};
struct Log {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return math_log(x); }
};
struct Tanh {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return math_tanh(x); }
};
struct Sigmoid {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return math_sigmoid(x); }
};
struct Sqrt {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return math_sqrt(x); }
};
struct Relu {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return x > A(0) ? x : A(0); }
};
struct Square {
  template <class A>
  __device__ __forceinline__ A operator()(A x) const { return x * x; }
};

// Derivatives in terms of y = f(x): exp, tanh, sigmoid, sqrt.
struct ExpGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A y) const { return g * y; }
};
struct TanhGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A y) const { return g * (A(1) - y * y); }
};
struct SigmoidGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A y) const { return g * (y * (A(1) - y)); }
};
struct SqrtGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A y) const { return g * (A(0.5) / y); }
};
// Derivatives in terms of x: log, relu, square, pow.
struct LogGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A x) const { return g * (A(1) / x); }
};
struct ReluGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A x) const { return g * (x > A(0) ? A(1) : A(0)); }
};
struct SquareGrad {
  template <class A>
  __device__ __forceinline__ A operator()(A g, A x) const { return g * (A(2) * x); }
};
template <class A>
struct PowGrad {
  A exponent;
  __device__ __forceinline__ A operator()(A g, A x) const { return g * (exponent * math_pow(x, exponent - A(1))); }
};

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::affine: return "affine";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::relu: return "relu";
    case UnaryOp::square: return "square";
    case UnaryOp::pow: return "pow";
  }
  return "?";
}

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  TSU_CUDA_REQUIRE(out.is_contiguous() && a.device() == out.device() && b.device() == out.device() &&
                       a.dtype() == out.dtype() && b.dtype() == out.dtype(),
                   ValueError,
                   std::string("[") + name + "] internal: operands must share the output's device and dtype");
  if (out.numel() == 0) return;
  dispatch_float(out.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
      case BinaryOp::add: launch_binary<T>(out, a, b, Arith<BinaryOp::add>{}); break;
      case BinaryOp::sub: launch_binary<T>(out, a, b, Arith<BinaryOp::sub>{}); break;
      case BinaryOp::mul: launch_binary<T>(out, a, b, Arith<BinaryOp::mul>{}); break;
      case BinaryOp::div: launch_binary<T>(out, a, b, Arith<BinaryOp::div>{}); break;
    }
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& x, double p0, double p1) {
  const char* name = unary_name(op);
  require_like(name, out, x, "the input");
  dispatch_float(out.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const std::array<Tensor, 1> in{x};
    switch (op) {
      case UnaryOp::affine:
        launch_map<T, 1>(out, in, Affine<A>{static_cast<A>(p0), static_cast<A>(p1)});
        break;
      case UnaryOp::exp: launch_map<T, 1>(out, in, Exp{}); break;
      case UnaryOp::log: launch_map<T, 1>(out, in, Log{}); break;
      case UnaryOp::tanh: launch_map<T, 1>(out, in, Tanh{}); break;
      case UnaryOp::sigmoid: launch_map<T, 1>(out, in, Sigmoid{}); break;
      case UnaryOp::sqrt: launch_map<T, 1>(out, in, Sqrt{}); break;
      case UnaryOp::relu: launch_map<T, 1>(out, in, Relu{}); break;
      case UnaryOp::square: launch_map<T, 1>(out, in, Square{}); break;
      case UnaryOp::pow: launch_map<T, 1>(out, in, Pow<A>{static_cast<A>(p0)}); break;
    }
  });
}

void unary_backward(UnaryOp op, const Tensor& dx, const Tensor& g, const Tensor& x, const Tensor& y, double p0) {
  const char* name = unary_name(op);
  require_like(name, dx, g, "the gradient");
  require_like(name, dx, x, "the input");
  require_like(name, dx, y, "the output");
  TSU_CUDA_REQUIRE(op != UnaryOp::affine, ValueError, "[affine] internal: the backward of affine is affine");
  dispatch_float(dx.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const std::array<Tensor, 2> gx{g, x}, gy{g, y};
    switch (op) {
      case UnaryOp::exp: launch_map<T, 2>(dx, gy, ExpGrad{}); break;
      case UnaryOp::tanh: launch_map<T, 2>(dx, gy, TanhGrad{}); break;
      case UnaryOp::sigmoid: launch_map<T, 2>(dx, gy, SigmoidGrad{}); break;
      case UnaryOp::sqrt: launch_map<T, 2>(dx, gy, SqrtGrad{}); break;
      case UnaryOp::log: launch_map<T, 2>(dx, gx, LogGrad{}); break;
      case UnaryOp::relu: launch_map<T, 2>(dx, gx, ReluGrad{}); break;
      case UnaryOp::square: launch_map<T, 2>(dx, gx, SquareGrad{}); break;
      case UnaryOp::pow: launch_map<T, 2>(dx, gx, PowGrad<A>{static_cast<A>(p0)}); break;
      case UnaryOp::affine: break;
    }
  });
}

}  // namespace tsumugi::cuda

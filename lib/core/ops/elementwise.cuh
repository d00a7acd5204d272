#pragma once
// Internal, CUDA only: the elementwise map kernel shared by the arithmetic, unary and activation
// ops (elementwise.cu, activations.cu), and math functions in the accumulator type.
//
// map: out[i] = f(in_0[i], ..., in_{N-1}[i]) over contiguous tensors of one dtype, computed in
// acc_t<T> (float, or double for f64). 128-bit loads and stores when every pointer is 16-byte
// aligned; the tail (and unaligned tensors) take the scalar loop. Each element is computed the same
// way on either path, so the result never depends on alignment.
#include <array>
#include <cstdint>

#include "../cuda/device_math.cuh"

namespace tsumugi::cuda {

// ---- math in the accumulator type: the float functions for float, the double ones for double ----
template <class A>
__device__ __forceinline__ A math_exp(A x) {
  if constexpr (std::is_same_v<A, double>) return ::exp(x);
  else return ::expf(x);
}
template <class A>
__device__ __forceinline__ A math_log(A x) {
  if constexpr (std::is_same_v<A, double>) return ::log(x);
  else return ::logf(x);
}
template <class A>
__device__ __forceinline__ A math_tanh(A x) {
  if constexpr (std::is_same_v<A, double>) return ::tanh(x);
  else return ::tanhf(x);
}
template <class A>
__device__ __forceinline__ A math_sqrt(A x) {
  if constexpr (std::is_same_v<A, double>) return ::sqrt(x);
  else return ::sqrtf(x);
}
template <class A>
__device__ __forceinline__ A math_pow(A x, A y) {
  if constexpr (std::is_same_v<A, double>) return ::pow(x, y);
  else return ::powf(x, y);
}
template <class A>
__device__ __forceinline__ A math_sigmoid(A x) {
  return A(1) / (A(1) + math_exp(-x));
}

// ---- the map kernel ----
/// Elements of T in one 128-bit vector.
template <class T>
constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

template <class T>
struct alignas(16) Vec {
  T v[kVecWidth<T>];
};

/// The N input pointers of a map, passed by value.
template <class T, int N>
struct MapInputs {
  const T* p[N];
};

template <class A, int N, class F>
__device__ __forceinline__ A call_map(const F& f, const A (&v)[N]) {
  static_assert(N >= 1 && N <= 3, "map takes 1 to 3 inputs");
  if constexpr (N == 1) return f(v[0]);
  else if constexpr (N == 2) return f(v[0], v[1]);
  else return f(v[0], v[1], v[2]);
}

template <class T, int N, class F>
__global__ void map_kernel(T* __restrict__ out, MapInputs<T, N> in, int64_t n, bool vectorized, F f) {
  using A = acc_t<T>;
  constexpr int V = kVecWidth<T>;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (vectorized) {
    const int64_t vectors = n / V;
    for (int64_t j = first; j < vectors; j += step) {
      Vec<T> x[N];
#pragma unroll
      for (int k = 0; k < N; ++k) x[k] = reinterpret_cast<const Vec<T>*>(in.p[k])[j];
      Vec<T> y;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        A v[N];
#pragma unroll
        for (int k = 0; k < N; ++k) v[k] = load_as<A>(&x[k].v[e]);
        store_from(&y.v[e], call_map(f, v));
      }
      reinterpret_cast<Vec<T>*>(out)[j] = y;
    }
    done = vectors * V;
  }
  for (int64_t i = done + first; i < n; i += step) {
    A v[N];
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] = load_as<A>(in.p[k] + i);
    store_from(out + i, call_map(f, v));
  }
}

__host__ __device__ inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// out = f(inputs...) elementwise; out and every input contiguous with out's numel and dtype T.
template <class T, int N, class F>
void launch_map(const Tensor& out, const std::array<Tensor, N>& inputs, F f) {
  const int64_t n = out.numel();
  if (n == 0) return;
  MapInputs<T, N> in;
  bool vectorized = aligned16(out.data_ptr());
  for (int k = 0; k < N; ++k) {
    in.p[k] = ptr<const T>(inputs[k]);
    vectorized = vectorized && aligned16(in.p[k]);
  }
  constexpr int kThreads = 256;
  const int64_t work = vectorized ? (n + kVecWidth<T> - 1) / kVecWidth<T> : n;
  map_kernel<T, N, F><<<blocks_for(work, kThreads), kThreads, 0, stream_of(out)>>>(ptr<T>(out), in, n, vectorized, f);
  TSU_CUDA_CHECK_LAUNCH();
}

/// Throws ValueError naming `op` unless `t` is a contiguous tensor on out's device with out's shape and dtype.
inline void require_like(const char* op, const Tensor& out, const Tensor& t, const char* what) {
  TSU_CUDA_REQUIRE(t.device() == out.device() && t.dtype() == out.dtype() && t.shape() == out.shape() &&
                       t.is_contiguous() && out.is_contiguous(),
                   ValueError,
                   std::string("[") + op + "] internal: " + what + " must be contiguous with the output's shape, " +
                       "dtype and device");
}

}  // namespace tsumugi::cuda

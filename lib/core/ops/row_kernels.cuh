#pragma once
// Internal, CUDA only: building blocks of the row-wise kernels (norms.cu, loss.cu), where one
// block handles one row: 128-bit packs of elements, and block reductions in a fixed order.
//
// Reductions are butterflies of warp shuffles, then one value per warp through shared memory,
// then a butterfly over those: the order of additions depends only on blockDim, which the
// launchers derive from the row length, so results are the same bits on every run.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../cuda/device_math.cuh"

namespace tsumugi::cuda {

/// N consecutive elements loaded or stored as one (16 bytes for N = kPack<T>).
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

/// Elements per 128-bit pack: 4 floats, 8 bf16/f16, 2 doubles.
template <class T>
inline constexpr int kPack = static_cast<int>(16 / sizeof(T));

/// Whether rows of n elements starting at every pointer can be read in 16-byte packs.
inline bool packs_fit(int64_t n, int pack, std::initializer_list<const void*> pointers) {
  if (n % pack != 0) return false;
  for (const void* p : pointers)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

/// Calls f(std::integral_constant<int, N>) with N = kPack<T> when rows of n elements at every
/// pointer can be read in 16-byte packs, else with N = 1 (element by element).
template <class T, class F>
void with_pack(int64_t n, std::initializer_list<const void*> pointers, F&& f) {
  if (packs_fit(n, kPack<T>, pointers)) f(std::integral_constant<int, kPack<T>>{});
  else f(std::integral_constant<int, 1>{});
}

/// Threads per row-block: enough for one pack each, in whole warps, between 32 and max_threads.
inline int row_threads(int64_t packs, int max_threads) {
  const int64_t warps = (packs + 31) / 32;
  const int64_t threads = warps * 32;
  return static_cast<int>(threads < 32 ? 32 : (threads > max_threads ? max_threads : threads));
}

template <class A>
__device__ __forceinline__ A exp_of(A v) {
  if constexpr (std::is_same_v<A, double>) return ::exp(v);
  else return ::expf(v);
}

template <class A>
__device__ __forceinline__ A log_of(A v) {
  if constexpr (std::is_same_v<A, double>) return ::log(v);
  else return ::logf(v);
}

template <class A>
__device__ __forceinline__ A sqrt_of(A v) {
  if constexpr (std::is_same_v<A, double>) return ::sqrt(v);
  else return ::sqrtf(v);
}

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class A>
__device__ __forceinline__ A warp_max(A v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32; `shared`
/// holds 32 values. Safe to call repeatedly with the same `shared`.
template <class A>
__device__ __forceinline__ A block_sum(A v, A* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // an earlier call may still be reading `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? shared[lane] : A(0));
}

/// Maximum over the block, returned to every thread (as block_sum).
template <class A>
__device__ __forceinline__ A block_max(A v, A* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return warp_max(lane < warps ? shared[lane] : A(-INFINITY));
}

/// Running maximum m and sum of exp(x - m) of a set of values (online softmax).
template <class A>
struct MaxSum {
  A m = A(-INFINITY);
  A s = A(0);

  // A NaN makes s NaN (as on the CPU); -inf values add nothing.
  __device__ __forceinline__ void add(A x) {
    if (x > m) {
      s = s * exp_of(m - x) + A(1);  // exp(-inf) = 0 when this is the first finite value
      m = x;
    } else if (x != A(-INFINITY)) {
      s += exp_of(x - m);
    }
  }
  __device__ __forceinline__ void merge(A om, A os) {
    const A nm = fmax(m, om);
    if (nm == A(-INFINITY)) {  // nothing finite on either side: s is 0, or NaN
      s += os;
      return;
    }
    // A side with m = -inf has s = 0 (or NaN, which must survive): s * 0 keeps both right.
    s = (m == A(-INFINITY) ? s * A(0) : s * exp_of(m - nm)) + (om == A(-INFINITY) ? os * A(0) : os * exp_of(om - nm));
    m = nm;
  }
};

/// Combines every thread's MaxSum; every thread gets the block's. `shared` holds 64 values.
template <class A>
__device__ __forceinline__ MaxSum<A> block_max_sum(MaxSum<A> v, A* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1)
    v.merge(__shfl_xor_sync(0xffffffffu, v.m, offset), __shfl_xor_sync(0xffffffffu, v.s, offset));
  __syncthreads();
  if (lane == 0) {
    shared[warp] = v.m;
    shared[32 + warp] = v.s;
  }
  __syncthreads();
  MaxSum<A> w;
  if (lane < warps) {
    w.m = shared[lane];
    w.s = shared[32 + lane];
  }
  for (int offset = 16; offset > 0; offset >>= 1)
    w.merge(__shfl_xor_sync(0xffffffffu, w.m, offset), __shfl_xor_sync(0xffffffffu, w.s, offset));
  return w;
}

}  // namespace tsumugi::cuda

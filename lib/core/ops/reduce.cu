// CUDA kernels of the reductions: sum over (outer, reduced, inner) views, max/argmax along one
// dimension and max's gradient. CPU reference: reduce.cpp.
//
// Determinism: no atomics. Each sum is a per-thread sequential sum over a fixed set of elements
// followed by a fixed tree (warp shuffles, then shared memory); long reductions are cut into
// chunks whose partial sums a second pass adds in the same way. The cut depends on the shape only,
// never on the GPU model or its SM count: the same input gives the same bits on every run.
#include <algorithm>

#include "elementwise.cuh"
#include "reduce_cuda.h"

namespace tsumugi::cuda {
namespace {

constexpr int kBlock = 256;               // threads of the block-wide kernels
constexpr int kWarpsPerBlock = kBlock / 32;
constexpr int64_t kTargetBlocks = 1024;   // how many blocks a long reduction is cut into, at most
constexpr unsigned kMaxGrid = 1u << 20;   // grid-stride loops cover the rest

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class A>
DType acc_dtype() {
  return std::is_same_v<A, double> ? DType::f64 : DType::f32;
}

unsigned grid_for(int64_t blocks) { return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxGrid)); }

// ---- sums ----
template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x == kBlock); the result is valid in thread 0.
template <class A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A warp_sums[kWarpsPerBlock];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with warp_sums
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) v = warp_sum(lane < kWarpsPerBlock ? warp_sums[lane] : A(0));
  return v;
}

// Rows of at most 16 elements: one thread per row.
template <class In, class Out>
__global__ void sum_rows_thread(Out* __restrict__ out, const In* __restrict__ x, int64_t rows, int64_t length) {
  using A = acc_t<In>;
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < rows;
       row += int64_t(gridDim.x) * blockDim.x) {
    const In* p = x + row * length;
    A acc = 0;
    for (int64_t k = 0; k < length; ++k) acc += load_as<A>(p + k);
    store_from(out + row, acc);
  }
}

// Rows of 17 to 1024 elements: one warp per row (the row index is the same in the whole warp).
template <class In, class Out>
__global__ void sum_rows_warp(Out* __restrict__ out, const In* __restrict__ x, int64_t rows, int64_t length) {
  using A = acc_t<In>;
  const int lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32; row < rows;
       row += int64_t(gridDim.x) * kWarpsPerBlock) {
    const In* p = x + row * length;
    A acc = 0;
    for (int64_t k = lane; k < length; k += 32) acc += load_as<A>(p + k);
    acc = warp_sum(acc);
    if (lane == 0) store_from(out + row, acc);
  }
}

// Longer rows: one block per (row, chunk); out[row * chunks + c] = sum of x[row, c * chunk_len ..].
// Thread t adds groups of V consecutive elements: groups t, t + kBlock, ...; a group is one 128-bit
// load when the chunk is aligned, V scalar loads otherwise (same order, so the same bits).
template <class In, class Out>
__global__ void sum_rows_block(Out* __restrict__ out, const In* __restrict__ x, int64_t rows, int64_t length,
                               int64_t chunks, int64_t chunk_len) {
  using A = acc_t<In>;
  constexpr int V = kVecWidth<In>;
  for (int64_t b = blockIdx.x; b < rows * chunks; b += gridDim.x) {
    const int64_t row = b / chunks, begin = (b % chunks) * chunk_len;
    const int64_t count = std::min(chunk_len, length - begin);
    const In* p = x + row * length + begin;
    const bool vectorized = aligned16(p);
    const int64_t groups = count / V;
    A acc = 0;
    for (int64_t g = threadIdx.x; g < groups; g += kBlock) {
      if (vectorized) {
        const Vec<In> v = reinterpret_cast<const Vec<In>*>(p)[g];
#pragma unroll
        for (int e = 0; e < V; ++e) acc += load_as<A>(&v.v[e]);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) acc += load_as<A>(p + g * V + e);
      }
    }
    // The incomplete last group belongs to the thread whose turn it would be.
    if (threadIdx.x == groups % kBlock)
      for (int64_t k = groups * V; k < count; ++k) acc += load_as<A>(p + k);
    acc = block_sum(acc);
    if (threadIdx.x == 0) store_from(out + b, acc);
  }
}

// out[row] = sum of x[row, 0 .. length) for `rows` contiguous rows.
template <class In, class Out>
void sum_rows(Out* out, const In* x, int64_t rows, int64_t length, Device device, cudaStream_t s) {
  using A = acc_t<In>;
  if (length <= 16) {
    sum_rows_thread<In, Out><<<grid_for(ceil_div(rows, kBlock)), kBlock, 0, s>>>(out, x, rows, length);
    TSU_CUDA_CHECK_LAUNCH();
    return;
  }
  if (length <= 1024) {
    sum_rows_warp<In, Out><<<grid_for(ceil_div(rows, kWarpsPerBlock)), kBlock, 0, s>>>(out, x, rows, length);
    TSU_CUDA_CHECK_LAUNCH();
    return;
  }
  // Enough blocks for the whole GPU, and at least 4096 elements per block. The chunk length is a
  // multiple of 8, so every chunk of a row has the alignment of the row's start.
  int64_t chunks = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, rows), ceil_div(length, 4096)));
  const int64_t chunk_len = ceil_div(ceil_div(length, chunks), 8) * 8;
  chunks = ceil_div(length, chunk_len);
  const unsigned grid = grid_for(rows * chunks);
  if (chunks == 1) {
    sum_rows_block<In, Out><<<grid, kBlock, 0, s>>>(out, x, rows, length, 1, chunk_len);
    TSU_CUDA_CHECK_LAUNCH();
    return;
  }
  const Tensor partial = empty({rows * chunks}, {.dtype = acc_dtype<A>(), .device = device});  // (rows, chunks)
  sum_rows_block<In, A><<<grid, kBlock, 0, s>>>(ptr<A>(partial), x, rows, length, chunks, chunk_len);
  TSU_CUDA_CHECK_LAUNCH();
  // chunks <= kTargetBlocks, so this second pass takes one of the short-row kernels.
  sum_rows<A, Out>(out, ptr<const A>(partial), rows, chunks, device, s);
}

// Block (32, 8) per (o, tile of 32 columns, chunk of rows): thread (tx, ty) adds column
// tile * 32 + tx over rows begin + ty, begin + ty + 8, ... of its chunk; a fixed tree over ty
// follows. out[(c * outer + o) * inner + i], so that one chunk's output is (outer, inner).
template <class In, class Out>
__global__ void sum_columns_kernel(Out* __restrict__ out, const In* __restrict__ x, int64_t outer, int64_t reduced,
                                   int64_t inner, int64_t tiles, int64_t chunks, int64_t chunk_len) {
  using A = acc_t<In>;
  __shared__ A partial[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t b = blockIdx.x; b < outer * tiles * chunks; b += gridDim.x) {
    const int64_t c = b % chunks, o = b / chunks / tiles;
    const int64_t i = (b / chunks % tiles) * 32 + tx;
    const int64_t begin = c * chunk_len, end = std::min(reduced, begin + chunk_len);
    A acc = 0;
    if (i < inner)
      for (int64_t r = begin + ty; r < end; r += 8) acc += load_as<A>(x + (o * reduced + r) * inner + i);
    __syncthreads();  // the previous iteration's readers are done with `partial`
    partial[ty][tx] = acc;
    __syncthreads();
#pragma unroll
    for (int half = 4; half > 0; half >>= 1) {
      if (ty < half) partial[ty][tx] += partial[ty + half][tx];
      __syncthreads();
    }
    if (ty == 0 && i < inner) store_from(out + (c * outer + o) * inner + i, partial[0][tx]);
  }
}

// out[o, i] = sum_r x[o, r, i] with inner > 1.
template <class In, class Out>
void sum_columns(Out* out, const In* x, int64_t outer, int64_t reduced, int64_t inner, Device device,
                 cudaStream_t s) {
  using A = acc_t<In>;
  const int64_t tiles = ceil_div(inner, 32);
  // Cut long columns into chunks of at least 64 rows when there are too few blocks otherwise.
  int64_t chunks = std::max<int64_t>(1, std::min(ceil_div(kTargetBlocks, outer * tiles), ceil_div(reduced, 64)));
  int64_t chunk_len = reduced;
  if (chunks > 1) {
    chunk_len = ceil_div(reduced, chunks);
    chunks = ceil_div(reduced, chunk_len);
  }
  const dim3 block(32, 8);
  const unsigned grid = grid_for(outer * tiles * chunks);
  if (chunks == 1) {
    sum_columns_kernel<In, Out><<<grid, block, 0, s>>>(out, x, outer, reduced, inner, tiles, 1, chunk_len);
    TSU_CUDA_CHECK_LAUNCH();
    return;
  }
  const Tensor partial = empty({chunks * outer * inner}, {.dtype = acc_dtype<A>(), .device = device});
  sum_columns_kernel<In, A><<<grid, block, 0, s>>>(ptr<A>(partial), x, outer, reduced, inner, tiles, chunks,
                                                   chunk_len);
  TSU_CUDA_CHECK_LAUNCH();
  // partial is (chunks, outer * inner): its column sums are the result.
  sum_columns<A, Out>(out, ptr<const A>(partial), 1, chunks, outer * inner, device, s);
}

// ---- max ----
// (value, index) order of the CPU loop: a NaN beats any number and the first NaN wins; otherwise
// the larger value, and the smaller index among equal values. A total order, so any tree of
// comparisons gives the CPU's answer.
template <class A>
__device__ __forceinline__ bool better(A v, int64_t i, A best, int64_t best_i) {
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan || best_nan) return v_nan && (!best_nan || i < best_i);
  return v > best || (v == best && i < best_i);
}

template <class A>
__device__ __forceinline__ void warp_best(A& v, int64_t& i) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const A other = __shfl_down_sync(0xffffffffu, v, offset);
    const int64_t other_i = __shfl_down_sync(0xffffffffu, i, offset);
    if (better(other, other_i, v, i)) {
      v = other;
      i = other_i;
    }
  }
}

// Best of x[p[k * stride]] for k = first, first + step, ... < count, in index order.
template <class A, class T>
__device__ __forceinline__ void scan_best(const T* p, int64_t stride, int64_t first, int64_t step, int64_t count,
                                          A& best, int64_t& best_i) {
  for (int64_t k = first; k < count; k += step) {
    const A v = load_as<A>(p + k * stride);
    if (better(v, k, best, best_i)) {
      best = v;
      best_i = k;
    }
  }
}

// No element yet: loses to every element (-inf with an index past the end).
template <class A>
__device__ __forceinline__ A lowest() {
  return -INFINITY;
}
constexpr int64_t kNoIndex = INT64_MAX;

// inner > 1: one thread per (o, i), the CPU's loop over r.
template <class T>
__global__ void max_columns_kernel(T* values, int64_t* indices, const T* x, int64_t outer, int64_t reduced,
                                   int64_t inner) {
  using A = acc_t<T>;
  for (int64_t oi = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; oi < outer * inner;
       oi += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = oi / inner, i = oi % inner;
    A best = lowest<A>();
    int64_t best_i = kNoIndex;
    scan_best(x + o * reduced * inner + i, inner, 0, 1, reduced, best, best_i);
    store_from(values + oi, best);
    indices[oi] = best_i;
  }
}

// inner == 1, rows of at most 1024: one warp per row.
template <class T>
__global__ void max_rows_warp(T* values, int64_t* indices, const T* x, int64_t rows, int64_t length) {
  using A = acc_t<T>;
  const int lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32; row < rows;
       row += int64_t(gridDim.x) * kWarpsPerBlock) {
    A best = lowest<A>();
    int64_t best_i = kNoIndex;
    scan_best(x + row * length, 1, lane, 32, length, best, best_i);
    warp_best(best, best_i);
    if (lane == 0) {
      store_from(values + row, best);
      indices[row] = best_i;
    }
  }
}

// inner == 1, longer rows (a vocabulary of logits): one block per row.
template <class T>
__global__ void max_rows_block(T* values, int64_t* indices, const T* x, int64_t rows, int64_t length) {
  using A = acc_t<T>;
  __shared__ A warp_values[kWarpsPerBlock];
  __shared__ int64_t warp_indices[kWarpsPerBlock];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    A best = lowest<A>();
    int64_t best_i = kNoIndex;
    scan_best(x + row * length, 1, threadIdx.x, kBlock, length, best, best_i);
    warp_best(best, best_i);
    __syncthreads();  // the previous row's readers are done
    if (lane == 0) {
      warp_values[warp] = best;
      warp_indices[warp] = best_i;
    }
    __syncthreads();
    if (warp == 0) {
      best = lane < kWarpsPerBlock ? warp_values[lane] : lowest<A>();
      best_i = lane < kWarpsPerBlock ? warp_indices[lane] : kNoIndex;
      warp_best(best, best_i);
      if (lane == 0) {
        store_from(values + row, best);
        indices[row] = best_i;
      }
    }
  }
}

template <class T>
__global__ void max_backward_kernel(T* grad, const T* g, const int64_t* indices, int64_t outer, int64_t reduced,
                                    int64_t inner) {
  for (int64_t oi = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; oi < outer * inner;
       oi += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = oi / inner, i = oi % inner;
    grad[(o * reduced + indices[oi]) * inner + i] = g[oi];
  }
}

void require_plan(const char* op, const Tensor& x, int64_t outer, int64_t reduced, int64_t inner) {
  TSU_CUDA_REQUIRE(x.is_contiguous() && x.numel() == outer * reduced * inner, ValueError,
                   std::string("[") + op + "] internal: the input must be contiguous (outer, reduced, inner)");
}

void require_output(const char* op, const Tensor& out, const Tensor& x, DType dtype, int64_t numel) {
  TSU_CUDA_REQUIRE(out.is_contiguous() && out.numel() == numel && out.dtype() == dtype && out.device() == x.device(),
                   ValueError,
                   std::string("[") + op + "] internal: outputs must be contiguous, outer * inner elements, " +
                       "on the input's device");
}

}  // namespace

void sum_reduce(const Tensor& out, const Tensor& x, int64_t outer, int64_t reduced, int64_t inner) {
  require_plan("sum", x, outer, reduced, inner);
  require_output("sum", out, x, x.dtype(), outer * inner);
  if (out.numel() == 0) return;
  cudaStream_t s = stream_of(out);
  dispatch_float(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    if (inner == 1) sum_rows<T, T>(ptr<T>(out), ptr<const T>(x), outer, reduced, x.device(), s);
    else sum_columns<T, T>(ptr<T>(out), ptr<const T>(x), outer, reduced, inner, x.device(), s);
  });
}

void max_reduce(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t outer, int64_t reduced,
                int64_t inner) {
  require_plan("max", x, outer, reduced, inner);
  require_output("max", values, x, x.dtype(), outer * inner);
  require_output("max", indices, x, DType::i64, outer * inner);
  TSU_CUDA_REQUIRE(reduced >= 1, ValueError, "[max] empty tensor");
  if (values.numel() == 0) return;
  cudaStream_t s = stream_of(x);
  dispatch_float(x.dtype(), "max", [&](auto tag) {
    using T = decltype(tag);
    T* v = ptr<T>(values);
    int64_t* idx = ptr<int64_t>(indices);
    const T* p = ptr<const T>(x);
    if (inner > 1) {
      max_columns_kernel<T><<<grid_for(ceil_div(outer * inner, kBlock)), kBlock, 0, s>>>(v, idx, p, outer, reduced,
                                                                                         inner);
    } else if (reduced <= 1024) {
      max_rows_warp<T><<<grid_for(ceil_div(outer, kWarpsPerBlock)), kBlock, 0, s>>>(v, idx, p, outer, reduced);
    } else {
      max_rows_block<T><<<grid_for(outer), kBlock, 0, s>>>(v, idx, p, outer, reduced);
    }
    TSU_CUDA_CHECK_LAUNCH();
  });
}

void max_reduce_backward(const Tensor& grad, const Tensor& g, const Tensor& indices, int64_t outer, int64_t reduced,
                         int64_t inner) {
  require_plan("max", grad, outer, reduced, inner);
  require_output("max", g, grad, grad.dtype(), outer * inner);
  require_output("max", indices, grad, DType::i64, outer * inner);
  if (g.numel() == 0) return;
  cudaStream_t s = stream_of(grad);
  dispatch_float(grad.dtype(), "max", [&](auto tag) {
    using T = decltype(tag);
    max_backward_kernel<T><<<grid_for(ceil_div(outer * inner, kBlock)), kBlock, 0, s>>>(
        ptr<T>(grad), ptr<const T>(g), ptr<const int64_t>(indices), outer, reduced, inner);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tsumugi::cuda

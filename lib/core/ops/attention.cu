// Fused causal attention with grouped-query heads on CUDA: the launchers, and FlashAttention's
// algorithm on CUDA cores in float, used for f32 (full precision; bf16 and f16 go to the
// tensor-core kernels of attention_mma.cu and attention_mma_backward.cu). CPU reference: ops/attention.cpp.
//
// Forward, one block per (64 queries, query head, batch): key tiles of 64 pass through shared memory;
// each query row keeps a running max and sum (online softmax), so no (T, S) matrix exists. The row
// log-sum-exp is saved. Backward recomputes P = exp(S - lse) from it, in two deterministic passes:
// one block per (64 keys, kv head, batch) accumulates dK and dV over every query tile of every query
// head of its group, in a fixed order; one block per (64 queries, head, batch) accumulates dQ over
// the key tiles. D = rowsum(dO * O) comes first. No atomics anywhere.
//
// Layout of the work in a block: 256 threads as 32 (ty) x 8 (tx). A 64 x 64 score tile gives each
// thread rows ty and ty + 32 and columns tx + 8j (j < 8); a 64 x HD output tile gives it rows ty and
// ty + 32 and the float4 columns 32jj + 4tx. Tiles live in shared memory as float, rows padded by 4
// floats, so that float4 reads by the 8 threads of a quarter warp fall in distinct banks.
#include <cmath>

#include "attention_cuda.h"
#include "attention_kernels.cuh"

namespace tsumugi::cuda {
namespace {
using namespace attention;

constexpr int kTile = 64;
constexpr int kTY = 32, kTX = 8, kThreads = kTY * kTX;
constexpr int kRows = kTile / kTY;  // score and output rows per thread
constexpr int kCols = kTile / kTX;  // score columns per thread
constexpr int kLdP = kTile + 4;     // row pitch of (64, 64) score tiles in shared memory

/// dst (64, HD + 4) float = rows [0, rows) and dims [0, hd) of src (row pitch row_stride); zero elsewhere.
template <class T, int HD>
__device__ void load_tile(float* dst, const T* src, int64_t row_stride, int rows, int hd) {
  constexpr int ld = HD + 4;
  for (int idx = threadIdx.x; idx < kTile * HD; idx += kThreads) {
    const int r = idx / HD, d = idx % HD;
    dst[r * ld + d] = (r < rows && d < hd) ? to_float(src[r * row_stride + d]) : 0.f;
  }
}

/// acc[i][j] = sum_d A[ty + 32i][d] * B[tx + 8j][d] for two (64, HD + 4) tiles.
template <int HD>
__device__ __forceinline__ void dot_tile(const float* A, const float* B, float (&acc)[kRows][kCols]) {
  constexpr int ld = HD + 4;
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[i][j] = 0.f;
#pragma unroll 2
  for (int d = 0; d < HD; d += 4) {
    float4 a[kRows], b[kCols];
#pragma unroll
    for (int i = 0; i < kRows; ++i) a[i] = *reinterpret_cast<const float4*>(A + (ty + kTY * i) * ld + d);
#pragma unroll
    for (int j = 0; j < kCols; ++j) b[j] = *reinterpret_cast<const float4*>(B + (tx + kTX * j) * ld + d);
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        float s = acc[i][j];
        s = fmaf(a[i].x, b[j].x, s);
        s = fmaf(a[i].y, b[j].y, s);
        s = fmaf(a[i].z, b[j].z, s);
        s = fmaf(a[i].w, b[j].w, s);
        acc[i][j] = s;
      }
  }
}

/// acc[i][4jj + e] += sum_c P[ty + 32i][c] * V[c][32jj + 4tx + e] for P (64, 64 + 4), V (64, HD + 4).
template <int HD>
__device__ __forceinline__ void pv_tile(const float* P, const float* V, float (&acc)[kRows][HD / 8]) {
  constexpr int ld = HD + 4;
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll 2
  for (int c = 0; c < kTile; c += 4) {
    float4 p4[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) p4[i] = *reinterpret_cast<const float4*>(P + (ty + kTY * i) * kLdP + c);
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
#pragma unroll
      for (int jj = 0; jj < HD / 32; ++jj) {
        const float4 v = *reinterpret_cast<const float4*>(V + (c + cc) * ld + 32 * jj + 4 * tx);
#pragma unroll
        for (int i = 0; i < kRows; ++i) {
          const float p = cc == 0 ? p4[i].x : cc == 1 ? p4[i].y : cc == 2 ? p4[i].z : p4[i].w;
          acc[i][4 * jj + 0] = fmaf(p, v.x, acc[i][4 * jj + 0]);
          acc[i][4 * jj + 1] = fmaf(p, v.y, acc[i][4 * jj + 1]);
          acc[i][4 * jj + 2] = fmaf(p, v.z, acc[i][4 * jj + 2]);
          acc[i][4 * jj + 3] = fmaf(p, v.w, acc[i][4 * jj + 3]);
        }
      }
    }
  }
}

/// Writes rows [0, rows) and dims [0, hd) of a thread's output accumulators times `factor`.
template <class T, int HD>
__device__ void store_rows(T* dst, int64_t row_stride, int rows, int hd, const float (&acc)[kRows][HD / 8],
                           float factor) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int r = ty + kTY * i;
    if (r >= rows) continue;
#pragma unroll
    for (int jj = 0; jj < HD / 32; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int d = 32 * jj + 4 * tx + e;
        if (d < hd) dst[r * row_stride + d] = from_float<T>(acc[i][4 * jj + e] * factor);
      }
  }
}

// Reductions over the 8 threads (tx) that share a score row: lanes differ in their low 3 bits.
__device__ __forceinline__ float row_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float row_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// grid (query tiles, Hq, B). Shared: Q tile, one K-or-V tile, P tile.
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(Args a) {
  constexpr int ld = HD + 4;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);
  float* sKV = sQ + kTile * ld;
  float* sP = sKV + kTile * ld;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z, g = h / a.group;
  const int rows = min(kTile, a.queries - q0);
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  load_tile<T, HD>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim);

  float m[kRows], l[kRows], o[kRows][HD / 8];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) o[i][c] = 0.f;
  }
  // The last query of the tile sees keys up to (its index + offset).
  const int key_end = q0 + rows + a.offset;
  for (int k0 = 0; k0 < key_end; k0 += kTile) {
    const int keys = min(kTile, a.keys - k0);
    load_tile<T, HD>(sKV, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim);
    __syncthreads();
    float s[kRows][kCols];
    dot_tile<HD>(sQ, sKV, s);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int q = q0 + ty + kTY * i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int key = k0 + tx + kTX * j;
        s[i][j] = key <= q + a.offset ? s[i][j] * a.scale_log2 : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      const float m_new = fmaxf(m[i], row_max(tile_max));
      // Key 0 is visible to every query, so m_new is finite from the first tile on; the guard
      // only keeps a fully masked row free of inf - inf.
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float correction = exp2f(m[i] - base);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        s[i][j] = exp2f(s[i][j] - base);
        sum += s[i][j];
      }
      l[i] = l[i] * correction + row_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < HD / 8; ++c) o[i][c] *= correction;
    }
    __syncthreads();  // every thread is done reading K
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
      for (int j = 0; j < kCols; ++j) sP[(ty + kTY * i) * kLdP + tx + kTX * j] = s[i][j];
    load_tile<T, HD>(sKV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim);
    __syncthreads();
    pv_tile<HD>(sP, sKV, o);
    __syncthreads();  // before the next K tile overwrites V and P
  }
  T* out = const_cast<T*>(at<T>(a.o, b, q0, h));
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int r = ty + kTY * i;
    if (r < rows && tx == 0)
      a.lse[(int64_t(b) * a.q_heads + h) * a.queries + q0 + r] = (m[i] + log2f(l[i])) * kLn2;
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) o[i][c] /= l[i];
  }
  store_rows<T, HD>(out, a.o.row, rows, a.head_dim, o, 1.f);
}

// One warp per (b, t, h): delta[b, h, t] = sum_d dO * O.
template <class T>
__global__ void attention_delta_kernel(Args a) {
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = int64_t(a.batch) * a.queries * a.q_heads;
  if (warp >= rows) return;
  const int h = static_cast<int>(warp % a.q_heads);
  const int t = static_cast<int>((warp / a.q_heads) % a.queries);
  const int b = static_cast<int>(warp / (int64_t(a.q_heads) * a.queries));
  const T* o = at<T>(a.o, b, t, h);
  const T* g = at<T>(a.dout, b, t, h);
  float sum = 0.f;
  for (int d = lane; d < a.head_dim; d += 32) sum = fmaf(to_float(o[d]), to_float(g[d]), sum);
#pragma unroll
  for (int width = 16; width > 0; width /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, width);
  if (lane == 0) a.delta[(int64_t(b) * a.q_heads + h) * a.queries + t] = sum;
}

// Loads lse (in log2 units) and delta of query rows [q0, q0 + rows) of head h into shared memory.
__device__ void load_row_stats(const Args& a, int b, int h, int q0, int rows, float* sL, float* sD) {
  const int64_t base = (int64_t(b) * a.q_heads + h) * a.queries + q0;
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    sL[r] = r < rows ? a.lse[base + r] * kLog2e : 0.f;
    sD[r] = r < rows ? a.delta[base + r] : 0.f;
  }
}

// grid (key tiles, Hkv, B). Shared: K, V, Q, dO tiles, P^T and dS^T tiles, lse and delta rows.
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(Args a) {
  constexpr int ld = HD + 4;
  extern __shared__ float4 smem4[];
  float* sK = reinterpret_cast<float*>(smem4);
  float* sV = sK + kTile * ld;
  float* sQ = sV + kTile * ld;
  float* sdO = sQ + kTile * ld;
  float* sPT = sdO + kTile * ld;
  float* sdST = sPT + kTile * kLdP;
  float* sL = sdST + kTile * kLdP;
  float* sD = sL + kTile;
  const int k0 = blockIdx.x * kTile, g = blockIdx.y, b = blockIdx.z;
  const int keys = min(kTile, a.keys - k0);
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  load_tile<T, HD>(sK, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim);
  load_tile<T, HD>(sV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim);

  float dk[kRows][HD / 8], dv[kRows][HD / 8];
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) dk[i][c] = dv[i][c] = 0.f;
  // Query t sees key k when k <= t + offset: the first query that sees key k0 is k0 - offset.
  const int q_begin = max(0, k0 - a.offset) / kTile * kTile;
  for (int h = g * a.group; h < (g + 1) * a.group; ++h) {
    for (int q0 = q_begin; q0 < a.queries; q0 += kTile) {
      const int rows = min(kTile, a.queries - q0);
      load_tile<T, HD>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim);
      load_tile<T, HD>(sdO, at<T>(a.dout, b, q0, h), a.dout.row, rows, a.head_dim);
      load_row_stats(a, b, h, q0, rows, sL, sD);
      __syncthreads();
      float st[kRows][kCols], dpt[kRows][kCols];
      dot_tile<HD>(sK, sQ, st);
      dot_tile<HD>(sV, sdO, dpt);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int key = k0 + ty + kTY * i;
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          const int r = tx + kTX * j;
          const bool visible = r < rows && key <= q0 + r + a.offset;
          const float p = visible ? exp2f(st[i][j] * a.scale_log2 - sL[r]) : 0.f;
          sPT[(ty + kTY * i) * kLdP + r] = p;
          sdST[(ty + kTY * i) * kLdP + r] = p * (dpt[i][j] - sD[r]);
        }
      }
      __syncthreads();
      pv_tile<HD>(sPT, sdO, dv);
      pv_tile<HD>(sdST, sQ, dk);
      __syncthreads();  // before the next query tile overwrites Q, dO, P^T and dS^T
    }
  }
  store_rows<T, HD>(static_cast<T*>(a.dk) + int64_t(b) * a.keys * a.kv_heads * a.head_dim +
                        (int64_t(k0) * a.kv_heads + g) * a.head_dim,
                    int64_t(a.kv_heads) * a.head_dim, keys, a.head_dim, dk, a.scale);
  store_rows<T, HD>(static_cast<T*>(a.dv) + int64_t(b) * a.keys * a.kv_heads * a.head_dim +
                        (int64_t(k0) * a.kv_heads + g) * a.head_dim,
                    int64_t(a.kv_heads) * a.head_dim, keys, a.head_dim, dv, 1.f);
}

// grid (query tiles, Hq, B). Shared: Q, dO, K, V tiles, dS tile, lse and delta rows.
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(Args a) {
  constexpr int ld = HD + 4;
  extern __shared__ float4 smem4[];
  float* sQ = reinterpret_cast<float*>(smem4);
  float* sdO = sQ + kTile * ld;
  float* sK = sdO + kTile * ld;
  float* sV = sK + kTile * ld;
  float* sdS = sV + kTile * ld;
  float* sL = sdS + kTile * kLdP;
  float* sD = sL + kTile;
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z, g = h / a.group;
  const int rows = min(kTile, a.queries - q0);
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  load_tile<T, HD>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim);
  load_tile<T, HD>(sdO, at<T>(a.dout, b, q0, h), a.dout.row, rows, a.head_dim);
  load_row_stats(a, b, h, q0, rows, sL, sD);

  float dq[kRows][HD / 8];
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int c = 0; c < HD / 8; ++c) dq[i][c] = 0.f;
  const int key_end = q0 + rows + a.offset;
  for (int k0 = 0; k0 < key_end; k0 += kTile) {
    const int keys = min(kTile, a.keys - k0);
    load_tile<T, HD>(sK, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim);
    load_tile<T, HD>(sV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim);
    __syncthreads();
    float s[kRows][kCols], dp[kRows][kCols];
    dot_tile<HD>(sQ, sK, s);
    dot_tile<HD>(sdO, sV, dp);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int r = ty + kTY * i;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int key = k0 + tx + kTX * j;
        const bool visible = r < rows && key <= q0 + r + a.offset;
        const float p = visible ? exp2f(s[i][j] * a.scale_log2 - sL[r]) : 0.f;
        sdS[r * kLdP + tx + kTX * j] = p * (dp[i][j] - sD[r]);
      }
    }
    __syncthreads();
    pv_tile<HD>(sdS, sK, dq);
    __syncthreads();  // before the next key tile overwrites K, V and dS
  }
  store_rows<T, HD>(static_cast<T*>(a.dq) + (int64_t(b) * a.queries + q0) * a.q_heads * a.head_dim +
                        int64_t(h) * a.head_dim,
                    int64_t(a.q_heads) * a.head_dim, rows, a.head_dim, dq, a.scale);
}

Operand operand(const Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

Args make_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse, double scale) {
  for (const Tensor* t : {&q, &k, &v})
    TSU_CUDA_REQUIRE(t->stride(3) == 1, ValueError, "[causal_attention] operands need unit stride in head_dim");
  Args a{};
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  a.o = operand(out);
  a.lse = static_cast<float*>(lse.data_ptr());
  a.batch = static_cast<int>(q.size(0));
  a.queries = static_cast<int>(q.size(1));
  a.keys = static_cast<int>(k.size(1));
  a.q_heads = static_cast<int>(q.size(2));
  a.kv_heads = static_cast<int>(k.size(2));
  a.head_dim = static_cast<int>(q.size(3));
  a.group = a.q_heads / a.kv_heads;
  a.offset = a.keys - a.queries;
  a.scale = static_cast<float>(scale);
  a.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  return a;
}

void check_supported(DType dtype, int head_dim) {
  TSU_CUDA_REQUIRE(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16, ValueError,
                   "[causal_attention] dtype " + std::string(dtype_name(dtype)) +
                       " is not supported on CUDA (use f32, bf16 or f16)");
  TSU_CUDA_REQUIRE(head_dim <= 128, ValueError,
                   "[causal_attention] head_dim " + std::to_string(head_dim) + " is above 128, the CUDA limit");
}

// Calls f(std::integral_constant<int, HD>{}) with the padded head dimension HD in {32, 64, 128}.
template <class F>
void with_head_dim(int head_dim, F&& f) {
  if (head_dim <= 32) f(std::integral_constant<int, 32>{});
  else if (head_dim <= 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

template <class Kernel>
void launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args& a) {
  TSU_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  TSU_CUDA_CHECK_LAUNCH();
}

constexpr size_t tile_bytes(int hd) { return sizeof(float) * kTile * (hd + 4); }
constexpr size_t score_bytes() { return sizeof(float) * kTile * kLdP; }
constexpr size_t stats_bytes() { return sizeof(float) * 2 * kTile; }

}  // namespace

void causal_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              double scale) {
  if (q.numel() == 0) return;
  const Args a = make_args(q, k, v, out, lse, scale);
  check_supported(q.dtype(), a.head_dim);
  cudaStream_t stream = stream_of(out);
  // Tensor cores for the 16-bit types; f32 keeps full precision on the CUDA cores.
  if (q.dtype() != DType::f32) return forward_mma(a, q.dtype(), stream);
  const dim3 grid((a.queries + kTile - 1) / kTile, a.q_heads, a.batch);
  with_head_dim(a.head_dim, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    launch(attention_forward_kernel<float, HD>, grid, 2 * tile_bytes(HD) + score_bytes(), stream, a);
  });
}

void causal_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse, const Tensor& grad, const Tensor& dq, const Tensor& dk,
                               const Tensor& dv, double scale) {
  if (q.numel() == 0) return;
  TSU_CUDA_REQUIRE(grad.is_contiguous() && dq.is_contiguous() && dk.is_contiguous() && dv.is_contiguous(),
                   ValueError, "[causal_attention] backward needs contiguous gradients");
  Args a = make_args(q, k, v, out, lse, scale);
  check_supported(q.dtype(), a.head_dim);
  Tensor delta = empty({a.batch, a.q_heads, a.queries}, {.dtype = DType::f32, .device = q.device()});
  a.dout = operand(grad);
  a.delta = static_cast<float*>(delta.data_ptr());
  a.dq = dq.data_ptr();
  a.dk = dk.data_ptr();
  a.dv = dv.data_ptr();
  cudaStream_t stream = stream_of(q);
  const int64_t rows = int64_t(a.batch) * a.queries * a.q_heads;
  dispatch_float(q.dtype(), "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    attention_delta_kernel<T><<<blocks_for(rows * 32, 256, (int64_t(1) << 31) - 1), 256, 0, stream>>>(a);
    TSU_CUDA_CHECK_LAUNCH();
  });
  if (q.dtype() != DType::f32) return backward_mma(a, q.dtype(), stream);
  with_head_dim(a.head_dim, [&](auto hd) {
    constexpr int HD = decltype(hd)::value;
    launch(attention_dkdv_kernel<float, HD>, dim3((a.keys + kTile - 1) / kTile, a.kv_heads, a.batch),
           4 * tile_bytes(HD) + 2 * score_bytes() + stats_bytes(), stream, a);
    launch(attention_dq_kernel<float, HD>, dim3((a.queries + kTile - 1) / kTile, a.q_heads, a.batch),
           4 * tile_bytes(HD) + score_bytes() + stats_bytes(), stream, a);
  });
}

}  // namespace tsumugi::cuda

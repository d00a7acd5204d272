// Causal attention backward on tensor cores (bf16 or f16 operands, f32 accumulators), the two
// deterministic passes of attention.cu's CUDA-core backward with the same inputs (lse, delta):
//   dK, dV: one block of 4 warps per (64 keys, kv head, batch); warp w owns keys 16w .. 16w + 15
//           and loops over the query heads of its group and their tiles of 32 queries, in order:
//           S^T = K Q^T, dP^T = V dO^T, P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta),
//           dV += P^T dO, dK += dS^T Q (P^T and dS^T fed from registers, rounded to 16 bits).
//   dQ:     one block per (64 queries, query head, batch); warp w owns queries 16w .. 16w + 15 and
//           loops over key tiles of 64: S = Q K^T, dP = dO V^T, dS as above, dQ += dS K.
// Fragment layouts and shared-tile conventions: attention_mma.cuh.
#include "attention_mma.cuh"

namespace tsumugi::cuda::attention {
namespace {
using namespace tensor_core;

constexpr int kBwdQ = 32;  // queries per tile in the dK/dV pass (keeps its accumulators in registers)

/// Loads the A fragment of rows (row0 + group, + 8) and k block kk of a row-major shared tile.
template <class T>
__device__ __forceinline__ void load_a(uint32_t (&f)[4], const T* tile, int ld, int row0, int kk) {
  const int lane = threadIdx.x % 32, group = lane / 4, tig = lane % 4;
  const T* p = tile + (row0 + group) * ld + 16 * kk + 2 * tig;
  f[0] = word(p);
  f[1] = word(p + 8 * ld);
  f[2] = word(p + 8);
  f[3] = word(p + 8 * ld + 8);
}

/// Writes a warp's (16, HD) accumulators, rows row0 + group (+ 8) below `rows`, dims below hd, times factor.
template <class T, int HD>
__device__ void store_acc(T* dst, int64_t row_stride, int row0, int rows, int hd, const float (&acc)[HD / 8][4],
                          float factor) {
  const int lane = threadIdx.x % 32, group = lane / 4, tig = lane % 4;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + group + 8 * r;
    if (row >= rows) continue;
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = 8 * nd + 2 * tig + e;
        if (d < hd) dst[row * row_stride + d] = from_float<T>(acc[nd][2 * r + e] * factor);
      }
  }
}

/// lse (as log2) and delta of query rows [q0, q0 + rows) of head h, zero past `rows`.
__device__ void load_stats(const Args& a, int b, int h, int q0, int rows, int count, float* sL, float* sD) {
  const int64_t base = (int64_t(b) * a.q_heads + h) * a.queries + q0;
  for (int r = threadIdx.x; r < count; r += kThreads) {
    sL[r] = r < rows ? a.lse[base + r] * kLog2e : 0.f;
    sD[r] = r < rows ? a.delta[base + r] : 0.f;
  }
}

// grid (key tiles, Hkv, B). Shared: K, V (64, HD + kPad); Q, dO (32, HD + kPad); lse, delta (32).
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) dkdv_mma_kernel(Args a, bool wide) {
  constexpr int ld = HD + kPad;
  extern __shared__ uint4 smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kBlockK * ld;
  T* sQ = sV + kBlockK * ld;
  T* sdO = sQ + kBwdQ * ld;
  float* sL = reinterpret_cast<float*>(sdO + kBwdQ * ld);
  float* sD = sL + kBwdQ;
  const int k0 = blockIdx.x * kBlockK, g = blockIdx.y, b = blockIdx.z;
  const int keys = min(kBlockK, a.keys - k0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, tig = lane % 4;
  load_tile<T, HD>(sK, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim, wide);
  load_tile<T, HD>(sV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim, wide);

  const int key_row[2] = {k0 + 16 * warp + group, k0 + 16 * warp + group + 8};
  float dk[HD / 8][4], dv[HD / 8][4];
#pragma unroll
  for (int nd = 0; nd < HD / 8; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nd][e] = dv[nd][e] = 0.f;
  // Query t sees key k when k <= t + offset: the first query that sees key k0 is k0 - offset.
  const int q_begin = max(0, k0 - a.offset) / kBwdQ * kBwdQ;
  for (int h = g * a.group; h < (g + 1) * a.group; ++h) {
    for (int q0 = q_begin; q0 < a.queries; q0 += kBwdQ) {
      const int rows = min(kBwdQ, a.queries - q0);
      __syncthreads();  // every warp is done with the previous Q, dO and stats
      load_tile<T, HD, kBwdQ>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim, wide);
      load_tile<T, HD, kBwdQ>(sdO, at<T>(a.dout, b, q0, h), a.dout.row, rows, a.head_dim, wide);
      load_stats(a, b, h, q0, rows, kBwdQ, sL, sD);
      __syncthreads();

      float st[kBwdQ / 8][4], dpt[kBwdQ / 8][4];  // (this warp's 16 keys) x (32 queries)
#pragma unroll
      for (int nb = 0; nb < kBwdQ / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        uint32_t ka[4], va[4];
        load_a(ka, sK, ld, 16 * warp, kk);
        load_a(va, sV, ld, 16 * warp, kk);
#pragma unroll
        for (int nb = 0; nb < kBwdQ / 8; ++nb) {
          const T* q_row = sQ + (8 * nb + group) * ld + 16 * kk + 2 * tig;
          const T* o_row = sdO + (8 * nb + group) * ld + 16 * kk + 2 * tig;
          mma<T>(st[nb], ka, word(q_row), word(q_row + 8));
          mma<T>(dpt[nb], va, word(o_row), word(o_row + 8));
        }
      }
#pragma unroll
      for (int nb = 0; nb < kBwdQ / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = 8 * nb + 2 * tig + (e & 1);
          const bool visible = r < rows && key_row[e / 2] <= q0 + r + a.offset;
          const float p = visible ? exp2f(st[nb][e] * a.scale_log2 - sL[r]) : 0.f;
          st[nb][e] = p;
          dpt[nb][e] = p * (dpt[nb][e] - sD[r]);
        }
#pragma unroll
      for (int kb = 0; kb < kBwdQ / 16; ++kb) {
        const uint32_t pa[4] = {pack<T>(st[2 * kb][0], st[2 * kb][1]), pack<T>(st[2 * kb][2], st[2 * kb][3]),
                                pack<T>(st[2 * kb + 1][0], st[2 * kb + 1][1]),
                                pack<T>(st[2 * kb + 1][2], st[2 * kb + 1][3])};
        const uint32_t da[4] = {pack<T>(dpt[2 * kb][0], dpt[2 * kb][1]), pack<T>(dpt[2 * kb][2], dpt[2 * kb][3]),
                                pack<T>(dpt[2 * kb + 1][0], dpt[2 * kb + 1][1]),
                                pack<T>(dpt[2 * kb + 1][2], dpt[2 * kb + 1][3])};
#pragma unroll
        for (int nd = 0; nd < HD / 8; nd += 2) {
          const int block = (16 * kb + lane % 16) * ld + 8 * (nd + lane / 16);
          uint32_t bo[4], bq[4];
          load_b_transposed(bo, sdO + block);
          load_b_transposed(bq, sQ + block);
          mma<T>(dv[nd], pa, bo[0], bo[1]);
          mma<T>(dv[nd + 1], pa, bo[2], bo[3]);
          mma<T>(dk[nd], da, bq[0], bq[1]);
          mma<T>(dk[nd + 1], da, bq[2], bq[3]);
        }
      }
    }
  }
  const int64_t row_stride = int64_t(a.kv_heads) * a.head_dim;
  const int64_t first = ((int64_t(b) * a.keys + k0) * a.kv_heads + g) * a.head_dim;
  store_acc<T, HD>(static_cast<T*>(a.dk) + first, row_stride, 16 * warp, keys, a.head_dim, dk, a.scale);
  store_acc<T, HD>(static_cast<T*>(a.dv) + first, row_stride, 16 * warp, keys, a.head_dim, dv, 1.f);
}

// grid (query tiles, Hq, B). Shared: Q, dO, K, V (64, HD + kPad); lse, delta (64).
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) dq_mma_kernel(Args a, bool wide) {
  constexpr int ld = HD + kPad;
  extern __shared__ uint4 smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sdO = sQ + kBlockQ * ld;
  T* sK = sdO + kBlockQ * ld;
  T* sV = sK + kBlockK * ld;
  float* sL = reinterpret_cast<float*>(sV + kBlockK * ld);
  float* sD = sL + kBlockQ;
  const int q0 = blockIdx.x * kBlockQ, h = blockIdx.y, b = blockIdx.z, g = h / a.group;
  const int rows = min(kBlockQ, a.queries - q0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, tig = lane % 4;
  load_tile<T, HD>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim, wide);
  load_tile<T, HD>(sdO, at<T>(a.dout, b, q0, h), a.dout.row, rows, a.head_dim, wide);
  load_stats(a, b, h, q0, rows, kBlockQ, sL, sD);

  const int local_row[2] = {16 * warp + group, 16 * warp + group + 8};
  float dq[HD / 8][4];
#pragma unroll
  for (int nd = 0; nd < HD / 8; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[nd][e] = 0.f;
  const int key_end = q0 + rows + a.offset;
  for (int k0 = 0; k0 < key_end; k0 += kBlockK) {
    const int keys = min(kBlockK, a.keys - k0);
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<T, HD>(sK, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim, wide);
    load_tile<T, HD>(sV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim, wide);
    __syncthreads();

    float s[kBlockK / 8][4], dp[kBlockK / 8][4];
#pragma unroll
    for (int nb = 0; nb < kBlockK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] = dp[nb][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t qa[4], oa[4];
      load_a(qa, sQ, ld, 16 * warp, kk);
      load_a(oa, sdO, ld, 16 * warp, kk);
#pragma unroll
      for (int nb = 0; nb < kBlockK / 8; ++nb) {
        const T* k_row = sK + (8 * nb + group) * ld + 16 * kk + 2 * tig;
        const T* v_row = sV + (8 * nb + group) * ld + 16 * kk + 2 * tig;
        mma<T>(s[nb], qa, word(k_row), word(k_row + 8));
        mma<T>(dp[nb], oa, word(v_row), word(v_row + 8));
      }
    }
#pragma unroll
    for (int nb = 0; nb < kBlockK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = local_row[e / 2];
        const int key = k0 + 8 * nb + 2 * tig + (e & 1);
        const bool visible = r < rows && key <= q0 + r + a.offset;
        const float p = visible ? exp2f(s[nb][e] * a.scale_log2 - sL[r]) : 0.f;
        s[nb][e] = p * (dp[nb][e] - sD[r]);  // dS
      }
#pragma unroll
    for (int kb = 0; kb < kBlockK / 16; ++kb) {
      const uint32_t da[4] = {pack<T>(s[2 * kb][0], s[2 * kb][1]), pack<T>(s[2 * kb][2], s[2 * kb][3]),
                              pack<T>(s[2 * kb + 1][0], s[2 * kb + 1][1]), pack<T>(s[2 * kb + 1][2], s[2 * kb + 1][3])};
#pragma unroll
      for (int nd = 0; nd < HD / 8; nd += 2) {
        uint32_t bk[4];
        load_b_transposed(bk, sK + (16 * kb + lane % 16) * ld + 8 * (nd + lane / 16));
        mma<T>(dq[nd], da, bk[0], bk[1]);
        mma<T>(dq[nd + 1], da, bk[2], bk[3]);
      }
    }
  }
  const int64_t row_stride = int64_t(a.q_heads) * a.head_dim;
  const int64_t first = ((int64_t(b) * a.queries + q0) * a.q_heads + h) * a.head_dim;
  store_acc<T, HD>(static_cast<T*>(a.dq) + first, row_stride, 16 * warp, rows, a.head_dim, dq, a.scale);
}

template <class Kernel>
void launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args& a, bool wide) {
  TSU_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(a, wide);
  TSU_CUDA_CHECK_LAUNCH();
}

}  // namespace

void backward_mma(const Args& a, DType dtype, cudaStream_t stream) {
  const bool wide = wide_loads(a);
  dispatch_16bit(dtype, a.head_dim, [&](auto tag, auto hd) {
    using T = decltype(tag);
    constexpr int HD = decltype(hd)::value;
    const size_t tile = sizeof(T) * (HD + kPad);
    launch(dkdv_mma_kernel<T, HD>, dim3((a.keys + kBlockK - 1) / kBlockK, a.kv_heads, a.batch),
           (2 * kBlockK + 2 * kBwdQ) * tile + 2 * kBwdQ * sizeof(float), stream, a, wide);
    launch(dq_mma_kernel<T, HD>, dim3((a.queries + kBlockQ - 1) / kBlockQ, a.q_heads, a.batch),
           (2 * kBlockQ + 2 * kBlockK) * tile + 2 * kBlockQ * sizeof(float), stream, a, wide);
  });
}

}  // namespace tsumugi::cuda::attention

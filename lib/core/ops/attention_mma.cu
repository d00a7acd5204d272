// Causal attention forward on tensor cores (mma.sync m16n8k16, bf16 or f16 in, f32 accumulate),
// FlashAttention-2's schedule. Same results as the CUDA-core kernel of attention.cu up to the
// rounding of P to 16 bits before P V; same outputs (O and the natural log-sum-exp).
//
// One block of 4 warps per (64 queries, query head, batch); warp w owns query rows 16w .. 16w + 15.
// For each tile of 64 keys: S = Q K^T (warp: 16 x 64, eight m16n8 accumulators), the online
// softmax on those registers, then O += P V with P taken straight from the S accumulators (the
// m16n8 accumulator layout of two adjacent key blocks is the m16k16 operand layout).
// Fragment layouts and shared-tile conventions: attention_mma.cuh.
#include "attention_mma.cuh"

namespace tsumugi::cuda::attention {
namespace {
using namespace tensor_core;

// grid (query tiles, Hq, B), 128 threads. Shared: Q, K and V tiles, each (64, HD + kPad).
template <class T, int HD>
__global__ void __launch_bounds__(kThreads) forward_mma_kernel(Args a, bool wide) {
  static_assert(kBlockQ == kBlockK, "load_tile moves 64-row tiles");
  constexpr int ldq = HD + kPad;
  extern __shared__ uint4 smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kBlockQ * ldq;
  T* sV = sK + kBlockK * ldq;
  const int q0 = blockIdx.x * kBlockQ, h = blockIdx.y, b = blockIdx.z, g = h / a.group;
  const int rows = min(kBlockQ, a.queries - q0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, tig = lane % 4;

  load_tile<T, HD>(sQ, at<T>(a.q, b, q0, h), a.q.row, rows, a.head_dim, wide);
  __syncthreads();
  uint32_t qf[HD / 16][4];
  const T* q_rows = sQ + (16 * warp + group) * ldq + 2 * tig;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    qf[kk][0] = word(q_rows + 16 * kk);
    qf[kk][1] = word(q_rows + 8 * ldq + 16 * kk);
    qf[kk][2] = word(q_rows + 16 * kk + 8);
    qf[kk][3] = word(q_rows + 8 * ldq + 16 * kk + 8);
  }

  // This thread's two query rows: 16w + group and 16w + group + 8 (index 0 and 1 below).
  const int q_row[2] = {q0 + 16 * warp + group, q0 + 16 * warp + group + 8};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[HD / 8][4];
#pragma unroll
  for (int nd = 0; nd < HD / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;

  const int key_end = q0 + rows + a.offset;
  for (int k0 = 0; k0 < key_end; k0 += kBlockK) {
    const int keys = min(kBlockK, a.keys - k0);
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<T, HD>(sK, at<T>(a.k, b, k0, g), a.k.row, keys, a.head_dim, wide);
    load_tile<T, HD>(sV, at<T>(a.v, b, k0, g), a.v.row, keys, a.head_dim, wide);
    __syncthreads();

    float s[kBlockK / 8][4];
#pragma unroll
    for (int nb = 0; nb < kBlockK / 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
      const T* k_row = sK + (8 * nb + group) * ldq + 2 * tig;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) mma<T>(s[nb], qf[kk], word(k_row + 16 * kk), word(k_row + 16 * kk + 8));
    }

    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kBlockK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + 8 * nb + 2 * tig + (e & 1);
        const int r = e / 2;
        s[nb][e] = key <= q_row[r] + a.offset ? s[nb][e] * a.scale_log2 : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[nb][e]);
      }
    float correction[2], base[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet stays at zero
      correction[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
    }
#pragma unroll
    for (int nb = 0; nb < kBlockK / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nb][e] = exp2f(s[nb][e] - base[e / 2]);
        sum[e / 2] += s[nb][e];
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * correction[r] + quad_sum(sum[r]);
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd) {
      o[nd][0] *= correction[0];
      o[nd][1] *= correction[0];
      o[nd][2] *= correction[1];
      o[nd][3] *= correction[1];
    }

#pragma unroll
    for (int kb = 0; kb < kBlockK / 16; ++kb) {
      const uint32_t p[4] = {pack<T>(s[2 * kb][0], s[2 * kb][1]), pack<T>(s[2 * kb][2], s[2 * kb][3]),
                             pack<T>(s[2 * kb + 1][0], s[2 * kb + 1][1]), pack<T>(s[2 * kb + 1][2], s[2 * kb + 1][3])};
#pragma unroll
      for (int nd = 0; nd < HD / 8; nd += 2) {
        uint32_t v[4];
        load_b_transposed(v, sV + (16 * kb + lane % 16) * ldq + 8 * (nd + lane / 16));
        mma<T>(o[nd], p, v[0], v[1]);
        mma<T>(o[nd + 1], p, v[2], v[3]);
      }
    }
  }

  T* out = const_cast<T*>(at<T>(a.o, b, q0, h));
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * warp + group + 8 * r;
    if (row >= rows) continue;
    const float inv = 1.f / l[r];
    if (tig == 0) a.lse[(int64_t(b) * a.q_heads + h) * a.queries + q0 + row] = (m[r] + log2f(l[r])) * kLn2;
#pragma unroll
    for (int nd = 0; nd < HD / 8; ++nd)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = 8 * nd + 2 * tig + e;
        if (d < a.head_dim) out[row * a.o.row + d] = from_float<T>(o[nd][2 * r + e] * inv);
      }
  }
}

}  // namespace

void forward_mma(const Args& a, DType dtype, cudaStream_t stream) {
  const bool wide = wide_loads(a);
  const dim3 grid((a.queries + kBlockQ - 1) / kBlockQ, a.q_heads, a.batch);
  dispatch_16bit(dtype, a.head_dim, [&](auto tag, auto hd) {
    using T = decltype(tag);
    constexpr int HD = decltype(hd)::value;
    const size_t smem = sizeof(T) * (kBlockQ + 2 * kBlockK) * (HD + kPad);
    TSU_CUDA_CHECK(cudaFuncSetAttribute(forward_mma_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
    forward_mma_kernel<T, HD><<<grid, kThreads, smem, stream>>>(a, wide);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tsumugi::cuda::attention

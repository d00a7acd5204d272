#pragma once
// Internal, CUDA only: what the attention kernels of attention.cu (CUDA cores, every float dtype)
// and attention_mma.cu (tensor cores, bf16 and f16) share: the argument block and its indexing.
#include "../cuda/device_math.cuh"

namespace tsumugi::cuda::attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

/// One (B, rows, H, hd) operand: base pointer and element strides; the last dimension has stride 1.
struct Operand {
  const void* data;
  int64_t batch, row, head;
};

/// Everything a forward or backward kernel reads; passed by value.
struct Args {
  Operand q, k, v, o, dout;  // q, o, dout (B, T, Hq, hd); k, v (B, S, Hkv, hd)
  float* lse;                // (B, Hq, T): natural log-sum-exp of each query's scaled scores
  float* delta;              // (B, Hq, T): rowsum(dO * O), backward only
  void *dq, *dk, *dv;        // contiguous (B, T, Hq, hd) and (B, S, Hkv, hd), backward only
  int batch, queries, keys, q_heads, kv_heads, head_dim, group, offset;  // offset = S - T
  float scale, scale_log2;                                                // scale_log2 = scale * log2(e)
};

/// Address of element (b, t, h, 0) of an operand.
template <class T>
__device__ __forceinline__ const T* at(const Operand& x, int b, int64_t t, int h) {
  return static_cast<const T*>(x.data) + b * x.batch + t * x.row + h * x.head;
}

/// Tensor-core forward (bf16 or f16 in `dtype`, head_dim <= 128): writes a.o and a.lse.
void forward_mma(const Args& a, DType dtype, cudaStream_t stream);
/// Tensor-core backward (same dtypes): reads a.lse and a.delta, writes a.dq, a.dk, a.dv.
void backward_mma(const Args& a, DType dtype, cudaStream_t stream);

}  // namespace tsumugi::cuda::attention

#pragma once
// Internal: the CUDA side of matmul, linear and linear_gelu (cuBLASLt), declared without CUDA
// types so that matmul.cpp can call it. Defined in matmul.cu.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi::cuda {

/// c[i] = a[i] b[i] (+ bias) for i < batch, on a's device, in a's dtype (f32, bf16, f16, f64).
/// a (..., M, K) and b (..., K, N): the last two dimensions of each are row- or column-major
/// (a transposed view becomes a cuBLASLt transpose flag); matrix i of a starts i * batch_stride_a
/// elements after a's first element (0 repeats one matrix for the whole batch), likewise for b.
/// c (batch, M, N) contiguous, or (M, N) when batch is 1. bias (N), contiguous, or undefined.
/// When gelu_pre (batch, M, N) is defined: gelu_pre = a b + bias and c = gelu(gelu_pre), the
/// tanh form, fused into the GEMM epilogue where cuBLASLt allows it.
void gemm(const Tensor& a, int64_t batch_stride_a, const Tensor& b, int64_t batch_stride_b, const Tensor& c,
          int64_t batch, const Tensor& bias = Tensor(), const Tensor& gelu_pre = Tensor());

/// dpre = g * gelu'(pre), the tanh form; all three (..., N) contiguous, same shape and dtype.
void gelu_backward(const Tensor& g, const Tensor& pre, const Tensor& dpre);

}  // namespace tsumugi::cuda

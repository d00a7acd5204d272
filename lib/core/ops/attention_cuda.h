#pragma once
// Internal, CUDA only: launchers of the fused causal attention kernels (attention.cu: f32 on CUDA
// cores; attention_mma*.cu: bf16 and f16 on tensor cores). Tensors are allocated by attention.cpp
// on the inputs' device.
#include <tsumugi/core/tensor.h>

namespace tsumugi::cuda {

/// q (B, T, Hq, hd), k and v (B, S, Hkv, hd), each with unit stride in the last dimension, one float
/// dtype (f32, bf16, f16), hd <= 128. Writes out (B, T, Hq, hd) contiguous and lse (B, Hq, T) f32:
/// the natural log-sum-exp of each query's scaled scores, which the backward needs.
void causal_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              double scale);
/// Gradients of causal_attention_forward: grad (B, T, Hq, hd) contiguous -> dq (B, T, Hq, hd), dk and dv
/// (B, S, Hkv, hd), all contiguous and fully written. Deterministic (no atomics).
void causal_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               const Tensor& lse, const Tensor& grad, const Tensor& dq, const Tensor& dk,
                               const Tensor& dv, double scale);

}  // namespace tsumugi::cuda

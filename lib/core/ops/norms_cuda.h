#pragma once
// Internal: the CUDA side of softmax, log_softmax, layer_norm, rms_norm and their fused residual
// forms, declared without CUDA types so that norms.cpp can call it. Defined in norms.cu.
// Every tensor is contiguous and on one device; f32, bf16, f16 or f64.
#include <tsumugi/core/tensor.h>

namespace tsumugi::cuda {

/// y (rows, n) = softmax of each row of x (rows, n), or log_softmax when `log`.
void softmax_forward(const Tensor& x, const Tensor& y, bool log);
/// dx (rows, n) from the output y (rows, n) of softmax (or log_softmax) and its gradient g.
void softmax_backward(const Tensor& g, const Tensor& y, const Tensor& dx, bool log);

/// Normalises each row of d elements: LayerNorm when `centered` (bias (D) required), RMSNorm
/// otherwise. When residual is defined, the row normalised is s = x + residual, written to s.
/// x, residual, s, y (rows, D); weight (D); mean (rows, LayerNorm only) and rstd (rows) get the
/// row statistics in f32 (f64 for f64 inputs).
void norm_forward(const Tensor& x, const Tensor& residual, const Tensor& weight, const Tensor& bias, const Tensor& s,
                  const Tensor& y, const Tensor& mean, const Tensor& rstd, bool centered, double eps);
/// Backward of norm_forward: from g (rows, D), the gradient of y, and the normalised input x
/// (rows, D), writes dx (rows, D) (plus ds (rows, D) when defined: the gradient reaching s
/// directly), dweight (D) and, when centered, dbias (D). Parameter gradients are summed over rows
/// in a fixed order (per-chunk partial sums, then the chunks in order).
void norm_backward(const Tensor& g, const Tensor& ds, const Tensor& x, const Tensor& weight, const Tensor& mean,
                   const Tensor& rstd, const Tensor& dx, const Tensor& dweight, const Tensor& dbias, bool centered);

}  // namespace tsumugi::cuda

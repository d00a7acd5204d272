#pragma once
// Internal: the CUDA side of the fused softmax + cross-entropy, declared without CUDA types so
// that loss.cpp can call it. Defined in loss.cu.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi::cuda {

/// From logits (N, V) (f32, bf16, f16 or f64; contiguous) and integer targets (N): lse (N), each
/// row's log-sum-exp; loss (scalar), the mean over rows whose target is not ignore_index of
/// lse - logit[target] + z_loss * lse^2 (0 when every row is ignored, NaN when a target is outside
/// [0, V)); count (f64 scalar), the number of rows averaged. lse and loss are f32 (f64 for f64
/// logits). The mean adds the rows in a fixed order.
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double z_loss,
                           const Tensor& lse, const Tensor& loss, const Tensor& count);

/// grad (N, V), the logits' dtype: (softmax(logits) * (1 + 2 z_loss lse) - one_hot(target)) * g / count
/// per row, zero for ignored rows; softmax recomputed from the logits and the saved lse. g is the
/// loss's gradient (scalar, lse's dtype).
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, const Tensor& g,
                            const Tensor& count, int64_t ignore_index, double z_loss, const Tensor& grad);

}  // namespace tsumugi::cuda

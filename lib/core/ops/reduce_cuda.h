#pragma once
// Internal: CUDA launchers of the reductions (defined in reduce.cu, only in builds with
// TSUMUGI_WITH_CUDA). Each takes its input viewed as (outer, reduced, inner), as reduce.cpp's
// plan_reduction lays it out, and writes outputs allocated by the caller. Results are
// deterministic: every sum is taken in a fixed order that depends on the shape only.
#include <tsumugi/core/tensor.h>

#include <cstdint>

namespace tsumugi::cuda {

/// out[o, i] = sum_r x[o, r, i]. x: contiguous (outer, reduced, inner); out: contiguous, outer * inner
/// elements, x's dtype and device. Accumulates in float (double for f64).
void sum_reduce(const Tensor& out, const Tensor& x, int64_t outer, int64_t reduced, int64_t inner);

/// values[o, i] = max_r x[o, r, i] and indices[o, i] (i64) the first r that attains it; a NaN wins
/// (the first NaN), as on the CPU. x: contiguous (outer, reduced, inner) with reduced >= 1; values
/// (x's dtype) and indices: contiguous, outer * inner elements.
void max_reduce(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t outer, int64_t reduced,
                int64_t inner);

/// grad[o, indices[o, i], i] = g[o, i]. grad: contiguous (outer, reduced, inner), already zeroed;
/// g (grad's dtype) and indices (i64): contiguous, outer * inner elements.
void max_reduce_backward(const Tensor& grad, const Tensor& g, const Tensor& indices, int64_t outer, int64_t reduced,
                         int64_t inner);

}  // namespace tsumugi::cuda

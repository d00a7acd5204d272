#pragma once
// Internal: CUDA launchers of the activations, rotary embedding and dropout (defined in
// activations.cu, only in builds with TSUMUGI_WITH_CUDA). Outputs are allocated by the caller;
// every tensor is contiguous, on one device, with one float dtype, and the math follows the CPU
// formulas in activations.cpp, computed in float (double for f64).
#include <tsumugi/core/tensor.h>

#include <cstdint>
#include <vector>

namespace tsumugi::cuda {

/// The pointwise activations with their own backward kernels.
enum class Activation { gelu, silu };

/// y = f(x); y and x of one shape.
void activation_forward(Activation op, const Tensor& y, const Tensor& x);
/// dx = g * f'(x); all of one shape.
void activation_backward(Activation op, const Tensor& dx, const Tensor& g, const Tensor& x);

/// y = silu(gate) * up; all of one shape.
void swiglu_forward(const Tensor& y, const Tensor& gate, const Tensor& up);
/// dgate = g * up * silu'(gate), dup = g * silu(gate), in one pass; all of one shape.
void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& g, const Tensor& gate, const Tensor& up);

/// Largest head_dim / 2 that rope_rotate takes (its frequencies travel as a kernel argument).
constexpr int64_t kRopeMaxHalf = 256;
/// y = x with pairs (i, i + hd/2) of x (B, T, H, hd) rotated by (position_offset + t) * inv_freq[i]
/// (by minus that angle when `inverse`, which is the backward). inv_freq: hd/2 values as the CPU
/// computes them in the compute type (float, or double for f64).
void rope_rotate(const Tensor& y, const Tensor& x, const std::vector<double>& inv_freq, int64_t position_offset,
                 bool inverse);

/// mask[k] = scale when word k % 4 of Philox block first_block + k / 4 (key seed, stream) is
/// >= threshold, else 0: the CPU's dropout mask, bit for bit. mask: contiguous, any float dtype.
void dropout_mask(const Tensor& mask, uint32_t threshold, double scale, uint64_t seed, uint64_t stream,
                  uint64_t first_block);

}  // namespace tsumugi::cuda

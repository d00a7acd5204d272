#pragma once
// Internal: CUDA launchers of the optimizers and gradient utilities (defined in optimizers.cu,
// only in builds with TSUMUGI_WITH_CUDA). No CUDA types here, so that the .cpp files can include
// it in every build. The .cpp checks the arguments first: every tensor contiguous, on one CUDA
// device, of a dtype among f32, bf16 and f16. Every launcher runs on that device's tsumugi stream.
#include <tsumugi/core/optim.h>
#include <tsumugi/core/tensor.h>

#include <vector>

namespace tsumugi::cuda {

/// One parameter of a multi-tensor update; every defined tensor has the parameter's n elements.
struct OptimSlot {
  Tensor param;          ///< (n) f32, bf16 or f16: updated in place
  Tensor grad;           ///< (n) f32, bf16 or f16 (any of them, whatever the parameter's dtype)
  Tensor master;         ///< (n) f32 master weights when param is bf16/f16; undefined when f32
  Tensor state0;         ///< (n) f32: AdamW's exp_avg, SGD's momentum buffer (undefined: none)
  Tensor state1;         ///< (n) f32: AdamW's exp_avg_sq (unused by SGD)
  bool decayed = false;  ///< AdamW: weight decay applies to this parameter
};

/// AdamW (adamw_update's arithmetic) on every slot with gradient grad * grad_scale; `decay`
/// (1 - lr * weight_decay) applies to decayed slots. One launch per (param, grad) dtype pair.
void adamw_step(const std::vector<OptimSlot>& slots, const AdamWStepConstants& c, float decay, float grad_scale);
/// SGD (SGD::step's arithmetic) on every slot: d = g + wd * w; with momentum v = mu * v + d, d = v;
/// w -= lr * d.
void sgd_step(const std::vector<OptimSlot>& slots, float lr, float momentum, float weight_decay);

/// Elements per chunk of the multi-tensor launches: each CUDA block takes one chunk of one tensor.
inline constexpr int64_t kOptimChunk = 16384;
/// The fp32 sums of squares of every chunk of kOptimChunk elements of each gradient: one vector
/// per gradient, ceil(n / kOptimChunk) long, in the order of `grads`; one launch per dtype and
/// one synchronising copy to the host. Each partial depends on its chunk alone, so a gradient's
/// partials are the same whichever other gradients are in the call.
std::vector<std::vector<float>> square_partials(const std::vector<Tensor>& grads);
/// New tensors grads[i] * scale (same shapes and dtypes), one launch per dtype.
std::vector<Tensor> scaled(const std::vector<Tensor>& grads, float scale);
/// True when no element of `grads` is Inf or NaN (one synchronising copy).
bool all_finite(const std::vector<Tensor>& grads);

}  // namespace tsumugi::cuda

#pragma once
/// Optimizers that update parameters in place from their .grad, and gradient clipping.
#include <tsumugi/core/nn/module.h>

#include <string>
#include <vector>

namespace tsumugi {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  ///< decoupled; applied to parameters of 2 or more dimensions only
};

/// AdamW (Loshchilov & Hutter), with PyTorch's arithmetic: p *= 1 - lr * wd; then
/// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). 1-D parameters (biases,
/// norm weights) get no weight decay. State is fp32, named "exp_avg.<param>" and "exp_avg_sq.<param>".
class AdamW {
 public:
  AdamW(const NamedTensors& params, AdamWOptions options);
  /// One update from the current gradients; parameters without a gradient are skipped.
  void step();
  void zero_grad();
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  /// Moments by name plus "step" (a 1-element i64 tensor).
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

 private:
  NamedTensors params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

/// The per-step constants of AdamW's update (bias corrections folded in).
struct AdamWStepConstants {
  float step_size, inv_sqrt_bias2, beta1, beta2, eps;
  /// Constants of update number `step` (1-based).
  static AdamWStepConstants at(const AdamWOptions& options, int64_t step);
};

/// AdamW on n elements in place: w (weights), m and v (moments), g (gradient); `decay` is
/// 1 - lr * weight_decay for decayed parameters, 1 otherwise. Shared by AdamW and ZeRO-1.
void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamWStepConstants& c, float decay);

/// Stochastic gradient descent with optional momentum and (coupled) weight decay.
class SGD {
 public:
  SGD(const NamedTensors& params, double lr, double momentum = 0.0, double weight_decay = 0.0);
  void step();
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }

 private:
  NamedTensors params_;
  std::vector<Tensor> velocity_;
  double lr_, momentum_, weight_decay_;
};

/// L2 norm of all gradients together, computed in a fixed order (independent of thread count).
double grad_norm(const std::vector<Tensor>& params);
/// The factor that brings gradients of norm `norm` down to `max_norm`: max_norm / (norm + 1e-6)
/// when norm > max_norm, else 1 (as torch.nn.utils.clip_grad_norm_).
double clip_coefficient(double norm, double max_norm);
/// Multiplies every gradient by `scale`.
void scale_grads(const std::vector<Tensor>& params, double scale);
/// Scales all gradients so that their joint L2 norm is at most max_norm; returns the norm
/// before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace tsumugi

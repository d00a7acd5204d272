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
/// Scales all gradients so that their joint L2 norm is at most max_norm; returns the norm
/// before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace tsumugi

#pragma once
/// Optimizers that update parameters in place from their .grad, gradient clipping, and dynamic
/// loss scaling. Parameters may live on the CPU or on one CUDA device; on CUDA every update is a
/// few multi-tensor launches. bf16/f16 parameters are updated through fp32 master weights.
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
///
/// Parameters are contiguous f32, bf16 or f16 tensors, all on one device. A bf16/f16 parameter
/// gets an fp32 master copy (made from the parameter at the first step, or loaded by
/// load_state_dict): the update runs on the master weights in fp32 and writes them, rounded to
/// nearest even, back into the parameter. f32 parameters are updated in place. Construct the
/// optimizer after moving the model to its device and dtype.
class AdamW {
 public:
  AdamW(const NamedTensors& params, AdamWOptions options);
  /// One update from the current gradients; parameters without a gradient are skipped. The update
  /// uses grad * grad_scale, leaving .grad unchanged: pass 1 / loss scale (times a clip
  /// coefficient) to unscale fp16 gradients without another pass over them.
  void step(double grad_scale = 1.0);
  void zero_grad();
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  int64_t steps() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  /// Moments by name plus "step" (a 1-element i64 tensor), and "master.<param>" (fp32, the
  /// parameter's shape) for every bf16/f16 parameter. Tensors stay on the parameters' device.
  StateDict state_dict() const;
  /// Loads moments and step (missing ones are an error) and master weights, which also set the
  /// bf16/f16 parameters to their rounded values so that a resumed run continues exactly. A state
  /// without master weights (from an f32 run) takes them from the parameters at the next step.
  void load_state_dict(const StateDict& state);
  /// The fp32 weights of parameter i (its shape, on its device): the master copy of a bf16/f16
  /// parameter, the parameter itself when it is f32.
  Tensor master_weight(size_t i) const;
  /// master_weight of every parameter under the parameter's name: the fp32 weights a checkpoint's
  /// model.safetensors holds in mixed precision.
  StateDict master_weights() const;
  /// Sets the master weights of the bf16/f16 parameters named in `weights` (values of the
  /// parameters' shapes, any dtype and device) and those parameters to them rounded, so that a run
  /// started from fp32 weights (an initialisation, a model.safetensors) keeps their precision.
  /// Names of f32 parameters and unknown names are ignored.
  void load_master_weights(const StateDict& weights);

 private:
  // The fp32 master copy of parameter i when it is bf16/f16, made on first use.
  void ensure_master(size_t i);
  // Master copy of bf16/f16 parameter i := value; the parameter := value rounded.
  void set_master(size_t i, const Tensor& value);

  NamedTensors params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // fp32, each of its parameter's shape
  std::vector<Tensor> master_;                // fp32 copies of bf16/f16 parameters (undefined for f32)
  AdamWOptions options_;
  Device device_ = Device::cpu();  // where every parameter lives
  int64_t step_ = 0;
};

/// The per-step constants of AdamW's update (bias corrections folded in).
struct AdamWStepConstants {
  float step_size, inv_sqrt_bias2, beta1, beta2, eps;
  /// Constants of update number `step` (1-based).
  static AdamWStepConstants at(const AdamWOptions& options, int64_t step);
};

/// AdamW on n elements in place: w (weights), m and v (moments), g (gradient); `decay` is
/// 1 - lr * weight_decay for decayed parameters, 1 otherwise. Shared by AdamW and ZeRO-1, and the
/// reference of the CUDA kernel.
void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamWStepConstants& c, float decay);

/// A run of elements that AdamW updates in place: f32 contiguous tensors of one length on one
/// device (ZeRO-1 updates the pieces of its flat shard this way).
struct AdamWSlice {
  Tensor weights;        ///< fp32 weights: updated
  Tensor exp_avg;        ///< updated
  Tensor exp_avg_sq;     ///< updated
  Tensor grad;           ///< read
  bool decayed = false;  ///< weight decay (`decay` below) applies
};
/// adamw_update on every slice with gradient grad * grad_scale, on the CPU or on CUDA (there with
/// AdamW's kernel, a few launches for all slices); all slices on one device. The same arithmetic
/// as AdamW::step(grad_scale) on the same elements.
void adamw_update(const std::vector<AdamWSlice>& slices, const AdamWStepConstants& c, float decay,
                  double grad_scale = 1.0);

/// Stochastic gradient descent with optional momentum and (coupled) weight decay. Parameters as
/// for AdamW (f32 in place; bf16/f16 through fp32 master weights).
class SGD {
 public:
  SGD(const NamedTensors& params, double lr, double momentum = 0.0, double weight_decay = 0.0);
  void step();
  void zero_grad();
  void set_lr(double lr) { lr_ = lr; }

 private:
  NamedTensors params_;
  std::vector<Tensor> velocity_;  // fp32 momentum buffers (undefined without momentum)
  std::vector<Tensor> master_;    // fp32 copies of bf16/f16 parameters (undefined for f32)
  double lr_, momentum_, weight_decay_;
  Device device_ = Device::cpu();
};

// Gradient utilities. Each takes parameters and reads their .grad (parameters without one are
// skipped); all gradients must be on one device. On CUDA each is one launch per gradient dtype.

/// L2 norm of all gradients together, computed in a fixed order (independent of thread count):
/// the square root of every piece of grad_square_pieces, added in order in double.
double grad_norm(const std::vector<Tensor>& params);
/// The pieces grad_norm adds up, one vector per parameter (empty for one without a gradient):
/// sums of squares over consecutive blocks of grad_square_piece_size elements, in order. On the
/// CPU each is grad_square_blocks (in double); on CUDA fp32 sums per chunk, one launch per dtype
/// and one copy to the host. A piece depends on its block alone, so a norm whose gradients live
/// in several processes (pipeline stages) is put back together bit for bit.
std::vector<std::vector<double>> grad_square_pieces(const std::vector<Tensor>& params);
/// Elements per piece of grad_square_pieces on `device`: 4096 on the CPU, 16,384 on CUDA.
int64_t grad_square_piece_size(Device device);
/// grad_square_pieces of one gradient on the CPU: sums of squares (in double) over consecutive
/// blocks of 4096 elements, in order (any device's gradient is read as f32 on the host).
std::vector<double> grad_square_blocks(const Tensor& grad);
/// The sum of the squares of the elements of `x` (f32, bf16 or f16; CPU or CUDA), added as
/// grad_norm adds them: the square of grad_norm of one parameter whose gradient is `x`.
double sum_of_squares(const Tensor& x);
/// The factor that brings gradients of norm `norm` down to `max_norm`: max_norm / (norm + 1e-6)
/// when norm > max_norm, else 1 (as torch.nn.utils.clip_grad_norm_).
double clip_coefficient(double norm, double max_norm);
/// Multiplies every gradient by `scale` (each .grad is replaced by a new tensor).
void scale_grads(const std::vector<Tensor>& params, double scale);
/// Scales all gradients so that their joint L2 norm is at most max_norm; returns the norm
/// before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
/// True when no gradient holds an Inf or a NaN (what fp16 loss scaling checks after backward).
bool grads_finite(const std::vector<Tensor>& params);

struct LossScalerOptions {
  double init_scale = 65536.0;    ///< 2^16
  double growth_factor = 2.0;     ///< applied after growth_interval finite steps in a row
  double backoff_factor = 0.5;    ///< applied on every step with non-finite gradients
  int64_t growth_interval = 2000;
};

/// Dynamic loss scaling for fp16 training (as torch.amp.GradScaler). Each step: backward from
/// loss * scale(); `finite = grads_finite(params)`; if finite, step the optimizer with
/// grad_scale = inv_scale() (times the clip coefficient of grad_norm(params) * inv_scale()),
/// else skip the step; then update(finite), which backs the scale off or grows it.
class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(LossScalerOptions options = {});
  /// The factor to multiply the loss by before backward.
  double scale() const { return scale_; }
  /// 1 / scale(): brings scaled gradients back to the loss's units.
  double inv_scale() const { return 1.0 / scale_; }
  /// Records whether this step's gradients were finite and adjusts the scale; returns `finite`
  /// (false: the step must be skipped).
  bool update(bool finite);
  /// Finite steps in a row since the scale last changed.
  int64_t good_steps() const { return good_steps_; }
  /// "loss_scaler.scale" (f64) and "loss_scaler.good_steps" (i64), 1-element CPU tensors.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t good_steps_ = 0;
};

}  // namespace tsumugi

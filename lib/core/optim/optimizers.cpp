// AdamW, SGD and gradient clipping: elementwise updates, parallel over elements.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/optim.h>

#include <cmath>

#include "../check.h"
#include "../elementwise.h"

namespace tsumugi {
namespace {

void check_param(const std::string& name, const Tensor& p) {
  TSU_CHECK(p.dtype() == DType::f32 && p.is_contiguous() && p.device().is_cpu(), ValueError,
            "[optim] parameter {} must be a contiguous f32 cpu tensor (got {} on {})", name, dtype_name(p.dtype()),
            p.device().str());
}

// The gradient as a contiguous f32 tensor of the parameter's shape (or undefined).
Tensor grad_of(const std::string& name, const Tensor& p) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  TSU_CHECK(g.shape() == p.shape(), ValueError, "[optim] gradient of {} has shape {}, parameter {}", name,
            shape_str(g.shape()), shape_str(p.shape()));
  return g.to(DType::f32).contiguous();
}

}  // namespace

AdamW::AdamW(const NamedTensors& params, AdamWOptions options) : params_(params), options_(options) {
  TSU_CHECK(options.lr >= 0 && options.eps > 0 && options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 &&
                options.beta2 < 1 && options.weight_decay >= 0,
            ValueError, "[adamw] invalid options: lr {}, betas ({}, {}), eps {}, weight_decay {}", options.lr,
            options.beta1, options.beta2, options.eps, options.weight_decay);
  for (const auto& [name, p] : params_) {
    check_param(name, p);
    exp_avg_.push_back(zeros(p.shape()));
    exp_avg_sq_.push_back(zeros(p.shape()));
  }
}

AdamWStepConstants AdamWStepConstants::at(const AdamWOptions& o, int64_t step) {
  const double bias1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  return {static_cast<float>(o.lr / bias1), static_cast<float>(1.0 / std::sqrt(bias2)), static_cast<float>(o.beta1),
          static_cast<float>(o.beta2), static_cast<float>(o.eps)};
}

void adamw_update(float* w, float* m, float* v, const float* g, int64_t n, const AdamWStepConstants& c, float decay) {
  const float b1 = c.beta1, b2 = c.beta2, step_size = c.step_size, inv_sqrt_bias2 = c.inv_sqrt_bias2, eps = c.eps;
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    w[j] = w[j] * decay - step_size * m[j] / (std::sqrt(v[j]) * inv_sqrt_bias2 + eps);
  }
}

void AdamW::step() {
  NoGradGuard no_grad;
  ++step_;
  const AdamWStepConstants constants = AdamWStepConstants::at(options_, step_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    const Tensor g = grad_of(name, p);
    if (!g.defined()) continue;
    const float decay = p.dim() >= 2 ? static_cast<float>(1.0 - options_.lr * options_.weight_decay) : 1.0f;
    adamw_update(p.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(), g.data<float>(), p.numel(),
                 constants, decay);
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

StateDict AdamW::state_dict() const {
  StateDict state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state.emplace("exp_avg." + params_[i].first, exp_avg_[i]);
    state.emplace("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  state.emplace("step", from_data<int64_t>({step_}, {1}));
  return state;
}

void AdamW::load_state_dict(const StateDict& state) {
  NoGradGuard no_grad;
  auto get = [&](const std::string& key, const Shape& shape) -> const Tensor& {
    auto it = state.find(key);
    TSU_CHECK(it != state.end(), ValueError, "[adamw] optimizer state has no '{}'", key);
    TSU_CHECK(it->second.shape() == shape, ValueError, "[adamw] '{}' has shape {}, expected {}", key,
              shape_str(it->second.shape()), shape_str(shape));
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(get("exp_avg." + params_[i].first, params_[i].second.shape()));
    exp_avg_sq_[i].copy_(get("exp_avg_sq." + params_[i].first, params_[i].second.shape()));
  }
  step_ = get("step", {1}).item<int64_t>();
}

SGD::SGD(const NamedTensors& params, double lr, double momentum, double weight_decay)
    : params_(params), lr_(lr), momentum_(momentum), weight_decay_(weight_decay) {
  for (const auto& [name, p] : params_) {
    check_param(name, p);
    velocity_.push_back(momentum > 0 ? zeros(p.shape()) : Tensor());
  }
}

void SGD::step() {
  NoGradGuard no_grad;
  const float lr = static_cast<float>(lr_), mu = static_cast<float>(momentum_), wd = static_cast<float>(weight_decay_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    const Tensor g = grad_of(name, p);
    if (!g.defined()) continue;
    float* w = p.data<float>();
    const float* gv = g.data<float>();
    float* vel = velocity_[i].defined() ? velocity_[i].data<float>() : nullptr;
    const int64_t n = p.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
    for (int64_t j = 0; j < n; ++j) {
      float d = gv[j] + wd * w[j];
      if (vel) {
        vel[j] = mu * vel[j] + d;
        d = vel[j];
      }
      w[j] -= lr * d;
    }
  }
}

void SGD::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

double grad_norm(const std::vector<Tensor>& params) {
  // Sum of squares per fixed block of 4096 elements, then the blocks in order.
  constexpr int64_t kBlock = 4096;
  double total = 0;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const Tensor g = p.grad().to(DType::f32).contiguous();
    const float* gv = g.data<float>();
    const int64_t n = g.numel(), blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
    for (int64_t b = 0; b < blocks; ++b) {
      double s = 0;
      for (int64_t j = b * kBlock; j < std::min(n, (b + 1) * kBlock); ++j) s += static_cast<double>(gv[j]) * gv[j];
      partial[static_cast<size_t>(b)] = s;
    }
    for (double s : partial) total += s;
  }
  return std::sqrt(total);
}

double clip_coefficient(double norm, double max_norm) {
  return norm > max_norm && std::isfinite(norm) ? max_norm / (norm + 1e-6) : 1.0;
}

void scale_grads(const std::vector<Tensor>& params, double scale) {
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) p.set_grad(g * scale);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const double norm = grad_norm(params);
  const double scale = clip_coefficient(norm, max_norm);
  if (scale != 1.0) scale_grads(params, scale);
  return norm;
}

}  // namespace tsumugi

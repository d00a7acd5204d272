// AdamW, SGD and gradient clipping: elementwise updates, parallel over elements on the CPU, a few
// multi-tensor launches on CUDA (optimizers.cu). bf16/f16 parameters are updated through fp32
// master weights on both.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/optim.h>

#include <cmath>

#include "../check.h"
#include "../elementwise.h"
#include "optim_cuda.h"

namespace tsumugi {
namespace {

bool is_optim_dtype(DType dtype) { return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16; }

// The one device of all parameters (cpu when there are none); checks each parameter.
Device check_params(const char* op, const NamedTensors& params) {
  Device device = Device::cpu();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    TSU_CHECK(is_optim_dtype(p.dtype()) && p.is_contiguous(), ValueError,
              "[{}] parameter {} must be a contiguous f32, bf16 or f16 tensor (got {} on {})", op, name,
              dtype_name(p.dtype()), p.device().str());
    if (i == 0) device = p.device();
    TSU_CHECK(p.device() == device, ValueError, "[{}] parameter {} is on {} but parameter {} is on {}", op, name,
              p.device().str(), params[0].first, device.str());
  }
  return device;
}

// The gradient as a contiguous f32 tensor of the parameter's shape (or undefined).
Tensor grad_of(const std::string& name, const Tensor& p) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  TSU_CHECK(g.shape() == p.shape(), ValueError, "[optim] gradient of {} has shape {}, parameter {}", name,
            shape_str(g.shape()), shape_str(p.shape()));
  return g.to(DType::f32).contiguous();
}

#ifdef TSUMUGI_WITH_CUDA
// The gradient as the CUDA kernels read it: contiguous, f32/bf16/f16, on the parameter's device.
Tensor device_grad_of(const char* op, const std::string& name, const Tensor& p) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  TSU_CHECK(g.shape() == p.shape(), ValueError, "[{}] gradient of {} has shape {}, parameter {}", op, name,
            shape_str(g.shape()), shape_str(p.shape()));
  TSU_CHECK(g.device() == p.device(), ValueError, "[{}] gradient of {} is on {} but the parameter is on {}", op,
            name, g.device().str(), p.device().str());
  if (!is_optim_dtype(g.dtype())) g = g.to(DType::f32);
  return g.contiguous();
}
#endif

// A new fp32 copy of `p` when it is bf16/f16 and `master` is not made yet.
void make_master(Tensor& master, const Tensor& p) {
  if (p.dtype() != DType::f32 && !master.defined()) master = p.detach().to(DType::f32);
}

}  // namespace

AdamW::AdamW(const NamedTensors& params, AdamWOptions options) : params_(params), options_(options) {
  TSU_CHECK(options.lr >= 0 && options.eps > 0 && options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 &&
                options.beta2 < 1 && options.weight_decay >= 0,
            ValueError, "[adamw] invalid options: lr {}, betas ({}, {}), eps {}, weight_decay {}", options.lr,
            options.beta1, options.beta2, options.eps, options.weight_decay);
  device_ = check_params("adamw", params_);
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(zeros(p.shape(), {.device = p.device()}));
    exp_avg_sq_.push_back(zeros(p.shape(), {.device = p.device()}));
  }
  master_.resize(params_.size());
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

void adamw_update(const std::vector<AdamWSlice>& slices, const AdamWStepConstants& c, float decay,
                  double grad_scale) {
  if (slices.empty()) return;
  const Device device = slices.front().weights.device();
  for (const AdamWSlice& s : slices) {
    const int64_t n = s.weights.numel();
    for (const Tensor* t : {&s.weights, &s.exp_avg, &s.exp_avg_sq, &s.grad})
      TSU_CHECK(t->defined() && t->dtype() == DType::f32 && t->is_contiguous() && t->numel() == n &&
                    t->device() == device,
                ValueError, "[adamw_update] every tensor of a slice must be contiguous f32 with {} elements on {}", n,
                device.str());
  }
#ifdef TSUMUGI_WITH_CUDA
  if (device.is_cuda()) {
    std::vector<cuda::OptimSlot> slots;
    for (const AdamWSlice& s : slices)
      slots.push_back({.param = s.weights, .grad = s.grad, .master = {}, .state0 = s.exp_avg,
                       .state1 = s.exp_avg_sq, .decayed = s.decayed});
    cuda::adamw_step(slots, c, decay, static_cast<float>(grad_scale));
    return;
  }
#endif
  NoGradGuard no_grad;
  for (const AdamWSlice& s : slices) {
    const Tensor g = grad_scale != 1.0 ? (s.grad * grad_scale).contiguous() : s.grad;
    adamw_update(s.weights.data<float>(), s.exp_avg.data<float>(), s.exp_avg_sq.data<float>(), g.data<float>(),
                 s.weights.numel(), c, s.decayed ? decay : 1.0f);
  }
}

void AdamW::ensure_master(size_t i) { make_master(master_[i], params_[i].second); }

void AdamW::step(double grad_scale) {
  NoGradGuard no_grad;
  const float decay = static_cast<float>(1.0 - options_.lr * options_.weight_decay);
#ifdef TSUMUGI_WITH_CUDA
  if (device_.is_cuda()) {
    std::vector<cuda::OptimSlot> slots;  // every gradient checked before anything changes
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& [name, p] = params_[i];
      const Tensor g = device_grad_of("adamw", name, p);
      if (!g.defined()) continue;
      ensure_master(i);
      slots.push_back({.param = p, .grad = g, .master = master_[i], .state0 = exp_avg_[i],
                       .state1 = exp_avg_sq_[i], .decayed = p.dim() >= 2});
    }
    ++step_;
    cuda::adamw_step(slots, AdamWStepConstants::at(options_, step_), decay, static_cast<float>(grad_scale));
    return;
  }
#endif
  ++step_;
  const AdamWStepConstants constants = AdamWStepConstants::at(options_, step_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    Tensor g = grad_of(name, p);
    if (!g.defined()) continue;
    if (grad_scale != 1.0) g = (g * grad_scale).contiguous();
    ensure_master(i);
    const Tensor& w = master_[i].defined() ? master_[i] : p;
    adamw_update(w.data<float>(), exp_avg_[i].data<float>(), exp_avg_sq_[i].data<float>(), g.data<float>(), p.numel(),
                 constants, p.dim() >= 2 ? decay : 1.0f);
    if (master_[i].defined()) Tensor(p).copy_(master_[i]);
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

Tensor AdamW::master_weight(size_t i) const {
  TSU_CHECK(i < params_.size(), ValueError, "[adamw] parameter index {} out of range ({} parameters)", i,
            params_.size());
  const Tensor& p = params_[i].second;
  if (p.dtype() == DType::f32) return p.detach();
  if (master_[i].defined()) return master_[i];
  NoGradGuard no_grad;
  return p.detach().to(DType::f32);  // before the first step the master copy is the parameter
}

StateDict AdamW::master_weights() const {
  StateDict weights;
  for (size_t i = 0; i < params_.size(); ++i) weights.emplace(params_[i].first, master_weight(i));
  return weights;
}

StateDict AdamW::state_dict() const {
  StateDict state;
  for (size_t i = 0; i < params_.size(); ++i) {
    state.emplace("exp_avg." + params_[i].first, exp_avg_[i]);
    state.emplace("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
    if (params_[i].second.dtype() != DType::f32) state.emplace("master." + params_[i].first, master_weight(i));
  }
  state.emplace("step", from_data<int64_t>({step_}, {1}));
  return state;
}

void AdamW::load_state_dict(const StateDict& state) {
  NoGradGuard no_grad;
  auto check_shape = [](const std::string& key, const Tensor& t, const Shape& shape) {
    TSU_CHECK(t.shape() == shape, ValueError, "[adamw] '{}' has shape {}, expected {}", key, shape_str(t.shape()),
              shape_str(shape));
  };
  auto get = [&](const std::string& key, const Shape& shape) -> const Tensor& {
    auto it = state.find(key);
    TSU_CHECK(it != state.end(), ValueError, "[adamw] optimizer state has no '{}'", key);
    check_shape(key, it->second, shape);
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    exp_avg_[i].copy_(get("exp_avg." + name, p.shape()));
    exp_avg_sq_[i].copy_(get("exp_avg_sq." + name, p.shape()));
    if (p.dtype() == DType::f32) continue;  // an f32 parameter is its own master copy
    auto master = state.find("master." + name);
    if (master == state.end()) {
      master_[i] = Tensor();  // made from the parameter at the next step
      continue;
    }
    check_shape(master->first, master->second, p.shape());
    set_master(i, master->second);
  }
  step_ = get("step", {1}).item<int64_t>();
}

void AdamW::set_master(size_t i, const Tensor& value) {
  NoGradGuard no_grad;
  const Tensor& p = params_[i].second;
  if (!master_[i].defined()) master_[i] = empty(p.shape(), {.device = p.device()});
  master_[i].copy_(value);
  Tensor(p).copy_(master_[i]);  // the working weights are the rounded master weights
}

void AdamW::load_master_weights(const StateDict& weights) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    auto it = weights.find(name);
    if (p.dtype() == DType::f32 || it == weights.end()) continue;
    TSU_CHECK(it->second.shape() == p.shape(), ValueError, "[adamw] master weights of {} have shape {}, expected {}",
              name, shape_str(it->second.shape()), shape_str(p.shape()));
    set_master(i, it->second);
  }
}

SGD::SGD(const NamedTensors& params, double lr, double momentum, double weight_decay)
    : params_(params), lr_(lr), momentum_(momentum), weight_decay_(weight_decay) {
  device_ = check_params("sgd", params_);
  for (const auto& [name, p] : params_)
    velocity_.push_back(momentum > 0 ? zeros(p.shape(), {.device = p.device()}) : Tensor());
  master_.resize(params_.size());
}

void SGD::step() {
  NoGradGuard no_grad;
  const float lr = static_cast<float>(lr_), mu = static_cast<float>(momentum_), wd = static_cast<float>(weight_decay_);
#ifdef TSUMUGI_WITH_CUDA
  if (device_.is_cuda()) {
    std::vector<cuda::OptimSlot> slots;
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& [name, p] = params_[i];
      const Tensor g = device_grad_of("sgd", name, p);
      if (!g.defined()) continue;
      make_master(master_[i], p);
      slots.push_back({.param = p, .grad = g, .master = master_[i], .state0 = velocity_[i], .state1 = Tensor()});
    }
    cuda::sgd_step(slots, lr, mu, wd);
    return;
  }
#endif
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    const Tensor g = grad_of(name, p);
    if (!g.defined()) continue;
    make_master(master_[i], p);
    float* w = master_[i].defined() ? master_[i].data<float>() : p.data<float>();
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
    if (master_[i].defined()) Tensor(p).copy_(master_[i]);
  }
}

void SGD::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

}  // namespace tsumugi

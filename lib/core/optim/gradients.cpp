// Gradient utilities: the global norm, clipping, scaling and the finiteness check of loss scaling.
// CPU loops here; on CUDA one multi-tensor launch per gradient dtype (optimizers.cu).
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/optim.h>

#include <cmath>

#include "../check.h"
#include "../elementwise.h"
#include "optim_cuda.h"

namespace tsumugi {
namespace {

// The one device of all gradients of `params` (cpu when none has a gradient).
Device grads_device(const char* op, const std::vector<Tensor>& params) {
  Device device = Device::cpu();
  int64_t first = -1;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    if (first < 0) {
      first = static_cast<int64_t>(i);
      device = g.device();
    }
    TSU_CHECK(g.device() == device, ValueError,
              "[{}] gradient of parameter {} is on {} but gradient of parameter {} is on {}", op, i, g.device().str(),
              first, device.str());
  }
  return device;
}

#ifdef TSUMUGI_WITH_CUDA
// The gradients as the CUDA kernels read them: contiguous f32/bf16/f16 (others converted to f32).
std::vector<Tensor> device_grads(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.dtype() != DType::f32 && g.dtype() != DType::bf16 && g.dtype() != DType::f16) g = g.to(DType::f32);
    grads.push_back(g.contiguous());
  }
  return grads;
}
#endif

}  // namespace

int64_t grad_square_piece_size(Device device) {
#ifdef TSUMUGI_WITH_CUDA
  if (device.is_cuda()) return cuda::kOptimChunk;
#endif
  (void)device;
  return 4096;
}

std::vector<std::vector<double>> grad_square_pieces(const std::vector<Tensor>& params) {
  [[maybe_unused]] const Device device = grads_device("grad_norm", params);
  std::vector<std::vector<double>> pieces(params.size());
#ifdef TSUMUGI_WITH_CUDA
  if (device.is_cuda()) {
    NoGradGuard no_grad;
    std::vector<size_t> which;  // the parameters that have a gradient, in order
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].grad().defined()) which.push_back(i);
    const std::vector<std::vector<float>> partials = cuda::square_partials(device_grads(params));
    for (size_t k = 0; k < partials.size(); ++k) pieces[which[k]].assign(partials[k].begin(), partials[k].end());
    return pieces;
  }
#endif
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].grad().defined()) pieces[i] = grad_square_blocks(params[i].grad());
  return pieces;
}

double grad_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const std::vector<double>& pieces : grad_square_pieces(params))
    for (double s : pieces) total += s;
  return std::sqrt(total);
}

std::vector<double> grad_square_blocks(const Tensor& grad) {
  // Sum of squares per fixed block of 4096 elements: the same pieces for any thread count.
  constexpr int64_t kBlock = 4096;
  const Tensor g = grad.to(Device::cpu()).to(DType::f32).contiguous();
  const float* gv = g.data<float>();
  const int64_t n = g.numel(), blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0;
    for (int64_t j = b * kBlock; j < std::min(n, (b + 1) * kBlock); ++j) s += static_cast<double>(gv[j]) * gv[j];
    partial[static_cast<size_t>(b)] = s;
  }
  return partial;
}

double sum_of_squares(const Tensor& x) {
#ifdef TSUMUGI_WITH_CUDA
  if (x.device().is_cuda()) {
    NoGradGuard no_grad;
    const Tensor g = x.dtype() == DType::f32 || x.dtype() == DType::bf16 || x.dtype() == DType::f16 ? x : x.to(DType::f32);
    double total = 0;
    for (float s : cuda::square_partials({g.contiguous()}).front()) total += s;
    return total;
  }
#endif
  double total = 0;
  for (double s : grad_square_blocks(x)) total += s;
  return total;
}

double clip_coefficient(double norm, double max_norm) {
  return norm > max_norm && std::isfinite(norm) ? max_norm / (norm + 1e-6) : 1.0;
}

void scale_grads(const std::vector<Tensor>& params, double scale) {
  NoGradGuard no_grad;
  [[maybe_unused]] const Device device = grads_device("scale_grads", params);
#ifdef TSUMUGI_WITH_CUDA
  if (device.is_cuda()) {
    // New tensors rather than in place: a gradient may share its memory with another one.
    std::vector<Tensor> owners, grads;
    for (const Tensor& p : params) {
      const Tensor g = p.grad();
      if (!g.defined()) continue;
      if (g.dtype() == DType::f32 || g.dtype() == DType::bf16 || g.dtype() == DType::f16) {
        owners.push_back(p);
        grads.push_back(g.contiguous());
      } else {
        p.set_grad(g * scale);
      }
    }
    const std::vector<Tensor> out = cuda::scaled(grads, static_cast<float>(scale));
    for (size_t i = 0; i < owners.size(); ++i) owners[i].set_grad(out[i]);
    return;
  }
#endif
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

bool grads_finite(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  [[maybe_unused]] const Device device = grads_device("grads_finite", params);
#ifdef TSUMUGI_WITH_CUDA
  if (device.is_cuda()) return cuda::all_finite(device_grads(params));
#endif
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    // f64 stays f64: a large finite double would overflow to Inf in f32.
    const DType dtype = p.grad().dtype() == DType::f64 ? DType::f64 : DType::f32;
    const Tensor g = p.grad().to(dtype).contiguous();
    const int64_t n = g.numel();
    int64_t bad = 0;
    dispatch_float(dtype, "grads_finite", [&](auto tag) {
      using T = decltype(tag);
      const T* gv = g.data<T>();
#pragma omp parallel for reduction(+ : bad) schedule(static) if (n > kParallelGrain)
      for (int64_t j = 0; j < n; ++j) bad += std::isfinite(gv[j]) ? 0 : 1;
    });
    if (bad != 0) return false;
  }
  return true;
}

}  // namespace tsumugi

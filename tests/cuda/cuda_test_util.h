#pragma once
// The GPU test harness (ggml's habit): run an op on the CPU and on the GPU with the same random
// inputs, and compare outputs and input gradients. Tests skip themselves without a GPU.
#include <gtest/gtest.h>

#include <tsumugi/tsumugi.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace tsumugi::testing {

#define TSU_REQUIRE_GPU()                                                       \
  do {                                                                          \
    if (::tsumugi::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

/// Tolerance on the relative error ||gpu - cpu|| / ||cpu|| for a compute dtype.
inline double tolerance_for(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-2; }

/// ||a - b|| / max(||b||, tiny), both read as double on the host.
inline double relative_error(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(Device::cpu()).to_vector<double>();
  const std::vector<double> y = b.to(Device::cpu()).to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (std::isnan(x[i]) != std::isnan(y[i])) return INFINITY;
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

/// Uniform random f32 values in [lo, hi), from a seed (the same on every machine).
inline Tensor random_tensor(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  return rand(shape, gen, {}, lo, hi);
}

/// random_tensor that requires grad: an op input whose gradient expect_matches_cpu compares.
inline Tensor grad_input(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor x = random_tensor(shape, seed, lo, hi);
  x.set_requires_grad(true);
  return x;
}

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

/// Runs `fn` on `cpu_inputs` (f32, on the CPU) and on copies on cuda:0 in `dtype` (floating inputs
/// only; integer inputs move unchanged). Floating inputs that require grad get their gradients
/// compared too, after backward from a fixed random weighting of every output. The CPU side sees
/// the inputs rounded to `dtype`, so that only the op's own error is measured.
inline void expect_matches_cpu(const std::string& name, const OpFn& fn, const std::vector<Tensor>& cpu_inputs,
                               DType dtype = DType::f32, double tol = -1) {
  if (tol < 0) tol = tolerance_for(dtype);
  std::vector<Tensor> host, device;
  for (const Tensor& x : cpu_inputs) {
    const bool floating = is_floating(x.dtype());
    Tensor h = floating ? x.detach().to(dtype).to(DType::f32) : x.detach();
    Tensor d = floating ? x.detach().to(dtype).to(Device::cuda(0)) : x.detach().to(Device::cuda(0));
    if (x.requires_grad()) {
      h.set_requires_grad(true);
      d.set_requires_grad(true);
    }
    host.push_back(h);
    device.push_back(d);
  }
  const std::vector<Tensor> out_h = fn(host);
  const std::vector<Tensor> out_d = fn(device);
  ASSERT_EQ(out_h.size(), out_d.size()) << name;
  Tensor loss_h, loss_d;
  for (size_t i = 0; i < out_h.size(); ++i) {
    ASSERT_EQ(out_h[i].shape(), out_d[i].shape()) << name << " output " << i;
    EXPECT_TRUE(out_d[i].device().is_cuda()) << name << " output " << i << " is not on the GPU";
    const double err = relative_error(out_d[i].to(DType::f32), out_h[i]);
    EXPECT_LT(err, tol) << name << " (" << dtype_name(dtype) << ") output " << i << " relative error " << err;
    if (out_h[i].requires_grad() && is_floating(out_h[i].dtype())) {
      const Tensor w = random_tensor(out_h[i].shape(), 1000 + i);
      const Tensor term_h = sum(out_h[i] * w);
      const Tensor term_d = sum(out_d[i].to(DType::f32) * w.to(Device::cuda(0)));
      loss_h = loss_h.defined() ? loss_h + term_h : term_h;
      loss_d = loss_d.defined() ? loss_d + term_d : term_d;
    }
  }
  if (!loss_h.defined()) return;
  loss_h.backward();
  loss_d.backward();
  for (size_t i = 0; i < host.size(); ++i) {
    if (!host[i].requires_grad()) continue;
    ASSERT_TRUE(device[i].grad().defined()) << name << " input " << i << " got no gradient on the GPU";
    EXPECT_TRUE(device[i].grad().device().is_cuda()) << name << " input " << i;
    const double err = relative_error(device[i].grad().to(DType::f32), host[i].grad());
    EXPECT_LT(err, tol) << name << " (" << dtype_name(dtype) << ") gradient of input " << i << " relative error "
                        << err;
  }
}

}  // namespace tsumugi::testing

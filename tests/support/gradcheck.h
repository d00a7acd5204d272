#pragma once
// Float64 finite-difference gradient checks (as in flashlight and ggml's test-backend-ops).
//
// gradcheck(f, inputs) converts floating inputs to f64 leaves that require grad, reduces f's
// output to a scalar with fixed random weights, and compares autograd's gradient of every
// element with a central difference of the same scalar.
#include <gtest/gtest.h>
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/nn/module.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <functional>
#include <vector>

namespace tsumugi::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

inline ::testing::AssertionResult gradcheck(const Fn& f, std::vector<Tensor> inputs, double eps = 1e-6,
                                            double atol = 1e-6, double rtol = 1e-5) {
  for (Tensor& t : inputs) {
    if (is_floating(t.dtype())) {
      t = t.to(DType::f64).clone().detach();
      t.set_requires_grad(true);
    }
  }
  Generator gen(1234);
  const Tensor probe = f(inputs);
  const Tensor weights = randn(probe.shape(), gen, {.dtype = DType::f64});
  auto objective = [&]() { return sum(f(inputs) * weights); };

  Tensor loss = objective();
  loss.backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    const Tensor analytic = x.grad();
    if (!analytic.defined()) return ::testing::AssertionFailure() << "input " << i << " received no gradient";
    const std::vector<double> a = analytic.to_vector<double>();
    double* data = x.data<double>();
    NoGradGuard no_grad;
    for (int64_t j = 0; j < x.numel(); ++j) {
      const double saved = data[j];
      data[j] = saved + eps;
      const double plus = objective().item<double>();
      data[j] = saved - eps;
      const double minus = objective().item<double>();
      data[j] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      if (std::fabs(numeric - a[j]) > atol + rtol * std::fabs(numeric)) {
        return ::testing::AssertionFailure() << "input " << i << " element " << j << ": autograd " << a[j]
                                             << " vs finite difference " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace tsumugi::testing

namespace tsumugi::testing {

/// Checks the gradients of f64 parameters (leaves that require grad) of a scalar `loss()`,
/// e.g. a whole model converted with `model.to(DType::f64)`. Checks every `stride`-th element.
inline ::testing::AssertionResult gradcheck_params(const std::function<Tensor()>& loss, const NamedTensors& params,
                                                   int64_t stride = 1, double eps = 1e-6, double atol = 1e-6,
                                                   double rtol = 1e-5) {
  for (const auto& [name, p] : params) {
    if (p.dtype() != DType::f64) return ::testing::AssertionFailure() << name << " is not f64";
    p.zero_grad();
  }
  loss().backward();
  NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) return ::testing::AssertionFailure() << name << " received no gradient";
    const std::vector<double> analytic = p.grad().to_vector<double>();
    double* data = p.data<double>();
    for (int64_t j = 0; j < p.numel(); j += stride) {
      const double saved = data[j];
      data[j] = saved + eps;
      const double plus = loss().item<double>();
      data[j] = saved - eps;
      const double minus = loss().item<double>();
      data[j] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      if (std::fabs(numeric - analytic[static_cast<size_t>(j)]) > atol + rtol * std::fabs(numeric))
        return ::testing::AssertionFailure() << name << " element " << j << ": autograd "
                                             << analytic[static_cast<size_t>(j)] << " vs finite difference " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace tsumugi::testing

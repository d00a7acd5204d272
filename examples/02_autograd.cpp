// Lesson 2: automatic differentiation.
//
// When an op gets an input that requires grad, it records a node on a tape. loss.backward()
// walks the tape from the loss back to the inputs, applying the chain rule, and leaves
// d loss / d x in x.grad(). This lesson checks that against calculus and finite differences.
#include <tsumugi/tsumugi.h>

#include <cmath>
#include <iostream>

using namespace tsumugi;

int main() {
  // 1. A scalar function y = x^3 + 2x at x = 1.5; calculus says dy/dx = 3x^2 + 2 = 8.75.
  Tensor x = full({}, 1.5, {.dtype = DType::f64, .requires_grad = true});
  Tensor y = pow(x, 3.0) + x * 2.0;
  y.backward();
  std::cout << "y = x^3 + 2x at x = 1.5: y = " << y.item<double>() << ", dy/dx = " << x.grad().item<double>()
            << " (calculus: 8.75)\n";
  std::cout << "y was made by op '" << y.grad_fn_name() << "'; x is a leaf: " << std::boolalpha << x.is_leaf() << "\n\n";

  // 2. Many inputs at once: L = sum(softmax(w)^2). The gradient has w's shape.
  Generator gen(0);
  Tensor w = randn({5}, gen, {.dtype = DType::f64}).set_requires_grad();
  Tensor loss = sum(square(softmax(w)));
  loss.backward();
  std::cout << "w = " << w << "\n";
  std::cout << "dL/dw from autograd       = " << w.grad() << "\n";

  // The same gradient by finite differences: (L(w + eps e_i) - L(w - eps e_i)) / (2 eps).
  std::vector<double> numeric;
  {
    NoGradGuard no_grad;  // evaluating, not recording
    const double eps = 1e-6;
    for (int64_t i = 0; i < 5; ++i) {
      Tensor e = zeros({5}, {.dtype = DType::f64});
      e.select(0, i).fill_(eps);
      const double plus = sum(square(softmax(w + e))).item<double>();
      const double minus = sum(square(softmax(w - e))).item<double>();
      numeric.push_back((plus - minus) / (2 * eps));
    }
  }
  std::cout << "dL/dw by finite difference = " << from_data<double>(numeric) << "\n\n";

  // 3. Gradients accumulate until you clear them: two backward passes add up.
  Tensor v = ones({2}).set_requires_grad();
  sum(v * 3.0).backward();
  sum(v * 3.0).backward();
  std::cout << "after two backward passes of sum(3v): v.grad = " << v.grad() << "\n";
  v.zero_grad();

  // 4. detach() cuts the tape: the detached copy is a constant.
  Tensor c = (v * 5.0).detach();
  sum(v * c).backward();
  std::cout << "d/dv sum(v * detach(5v)) = " << v.grad() << " (5, not 10)\n";

  // 5. Misuse is an error with a message, never a crash.
  try {
    (v * 2.0).backward();  // not a scalar, and no gradient given
  } catch (const AutogradError& e) {
    std::cout << "error, as expected: " << e.what() << "\n";
  }
  return 0;
}

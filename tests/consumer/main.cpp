// Trains y = 2x + 1 with the installed library: proves headers, libraries and the CMake package.
#include <tsumugi/tsumugi.h>

#include <cmath>
#include <cstdio>

int main() {
  using namespace tsumugi;
  Tensor x = arange(0.0, 8.0, 1.0, {.dtype = DType::f32}).view({8, 1}) * 0.25;
  Tensor y = x * 2.0 + 1.0;
  Tensor w = zeros({1, 1}).set_requires_grad();
  Tensor b = zeros({1}).set_requires_grad();
  for (int step = 0; step < 500; ++step) {
    Tensor loss = mean(square(linear(x, w, b) - y));
    loss.backward();
    NoGradGuard no_grad;
    w.copy_(w - w.grad() * 0.1);
    b.copy_(b - b.grad() * 0.1);
    w.zero_grad();
    b.zero_grad();
  }
  const float wv = w.item<float>(), bv = b.item<float>();
  std::printf("consumer: w=%.4f b=%.4f\n", wv, bv);
  return std::fabs(wv - 2.0f) < 1e-2f && std::fabs(bv - 1.0f) < 1e-2f ? 0 : 1;
}

#pragma once
// Internal: branch-free math that the compiler vectorises. The f32 versions are accurate to a few
// ulp; the f64 versions call the standard library (they serve the gradient checks).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace tsumugi::vmath {

/// e^x for float, relative error about 2e-7; clamps to [e^-87.3, e^88.3].
inline float exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  // x = n ln2 + r with |r| <= ln2 / 2; the magic constant rounds x / ln2 to an integer.
  const float shifted = x * 1.44269504f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const int32_t ni = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(12582912.0f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((ni + 127) << 23);
}
inline double exp(double x) { return std::exp(x); }

/// tanh through exp; absolute error about 2e-7 in float.
inline float tanh(float x) {
  const float e = vmath::exp(2.0f * x);
  return 1.0f - 2.0f / (e + 1.0f);
}
inline double tanh(double x) { return std::tanh(x); }

inline float sigmoid(float x) { return 1.0f / (1.0f + vmath::exp(-x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace tsumugi::vmath

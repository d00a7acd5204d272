// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/random.h>

#include <cmath>
#include <numbers>

#include "dispatch.h"

namespace tsumugi {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;

// Uniform in [0, 1) with 24 bits; (0, 1] when `open_zero` (safe for log).
inline double unit(uint32_t word, bool open_zero = false) {
  return (static_cast<double>(word >> 8) + (open_zero ? 1.0 : 0.0)) * (1.0 / 16777216.0);
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

template <class F>
Tensor generate(const Shape& shape, TensorOptions options, F&& value_at) {
  Tensor host = empty(shape, {.dtype = options.dtype});
  dispatch_any(options.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(host.data_ptr());
    const int64_t n = host.numel();
#pragma omp parallel for schedule(static) if (n > 16384)
    for (int64_t i = 0; i < n; ++i) out[i] = narrow_to<T>(value_at(i));
  });
  Tensor result = host.to(options.device);
  if (options.requires_grad) result.set_requires_grad(true);
  return result;
}

}  // namespace

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> c, uint64_t key) {
  uint32_t k0 = static_cast<uint32_t>(key);
  uint32_t k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0, static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1, static_cast<uint32_t>(p0)};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c;
}

Generator Generator::for_name(uint64_t seed, std::string_view name) { return Generator(seed, fnv1a(name)); }

std::array<uint32_t, 4> Generator::block(uint64_t index) const {
  return philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), static_cast<uint32_t>(stream_),
                     static_cast<uint32_t>(stream_ >> 32)},
                    seed_);
}

Tensor rand(const Shape& shape, Generator& gen, TensorOptions options, double low, double high) {
  const uint64_t first = gen.advance(static_cast<uint64_t>((shape_numel(shape) + 3) / 4));
  return generate(shape, options, [&](int64_t i) {
    const auto words = gen.block(first + static_cast<uint64_t>(i / 4));
    return low + (high - low) * unit(words[static_cast<size_t>(i % 4)]);
  });
}

Tensor randn(const Shape& shape, Generator& gen, TensorOptions options, double mean, double std) {
  // One block per element: Box-Muller on its first two words.
  const uint64_t first = gen.advance(static_cast<uint64_t>(shape_numel(shape)));
  return generate(shape, options, [&](int64_t i) {
    const auto words = gen.block(first + static_cast<uint64_t>(i));
    const double radius = std::sqrt(-2.0 * std::log(unit(words[0], true)));
    return mean + std * radius * std::cos(2.0 * std::numbers::pi * unit(words[1]));
  });
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, TensorOptions options) {
  TSU_CHECK(high > low, ValueError, "[randint] empty range [{}, {})", low, high);
  const uint64_t range = static_cast<uint64_t>(high - low);
  const uint64_t first = gen.advance(static_cast<uint64_t>(shape_numel(shape)));
  return generate(shape, options, [&](int64_t i) {
    const auto words = gen.block(first + static_cast<uint64_t>(i));
    const uint64_t r = (static_cast<uint64_t>(words[0]) << 32) | words[1];
    return low + static_cast<int64_t>(r % range);
  });
}

void normal_(Tensor& tensor, Generator& gen, double mean, double std) {
  NoGradGuard no_grad;
  tensor.copy_(randn(tensor.shape(), gen, {.dtype = tensor.dtype()}, mean, std));
}

}  // namespace tsumugi

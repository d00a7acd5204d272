#pragma once
/// Counter-based random numbers (Philox-4x32-10). Element i of a draw depends only on the
/// generator's seed, stream and offset, never on thread count or device, so a seed gives the
/// same tensor on 1 or 64 threads and, with the same counters, on the GPU.
#include <tsumugi/core/tensor.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace tsumugi {

/// Philox-4x32-10 block function: four 32-bit words from a 128-bit counter and a 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, uint64_t key);

/// A seed, a stream and an offset (the number of 128-bit blocks consumed).
class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  /// A generator whose stream is derived from a name: parameters initialise from
  /// `Generator::for_name(seed, "model.layers.0.mlp.up_proj.weight")`, so adding a parameter
  /// never changes the values of the others.
  static Generator for_name(uint64_t seed, std::string_view name);

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  /// Reserves `blocks` counter blocks and returns the first one.
  uint64_t advance(uint64_t blocks) {
    const uint64_t first = offset_;
    offset_ += blocks;
    return first;
  }
  /// The four words of block `index` (not consuming anything).
  std::array<uint32_t, 4> block(uint64_t index) const;

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t offset_ = 0;
};

/// Uniform numbers in [low, high).
Tensor rand(const Shape& shape, Generator& gen, TensorOptions options = {}, double low = 0.0, double high = 1.0);
/// Normal numbers with the given mean and standard deviation.
Tensor randn(const Shape& shape, Generator& gen, TensorOptions options = {}, double mean = 0.0, double std = 1.0);
/// Integers uniform in [low, high) (default dtype i32).
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen,
               TensorOptions options = {.dtype = DType::i32});
/// Fills a floating tensor in place with normal numbers (no autograd).
void normal_(Tensor& tensor, Generator& gen, double mean = 0.0, double std = 1.0);

}  // namespace tsumugi

#pragma once
/// Sampling as a pure function: sample `i` of the run is window `permutation_epoch(i % W)` of
/// epoch `i / W`, where W is the number of windows and the permutation is a seeded Feistel
/// network over the window index (cycle-walking to stay below W), never materialised.
#include <array>
#include <cstdint>

namespace tsumugi {

/// A bijection of [0, size) chosen by (seed, epoch); O(1) memory, a few hashes per call.
class WindowPermutation {
 public:
  /// `size` >= 1 elements; the same (size, seed, epoch) always gives the same permutation.
  WindowPermutation(uint64_t size, uint64_t seed, uint64_t epoch);
  /// The image of `index` (< size) under the permutation.
  uint64_t operator()(uint64_t index) const;
  uint64_t size() const { return size_; }

 private:
  static constexpr int kRounds = 6;
  uint64_t encrypt(uint64_t value) const;  // one pass of the Feistel network on [0, 2^bits)
  uint64_t size_;
  int half_bits_;
  uint64_t half_mask_;
  std::array<uint64_t, kRounds> round_keys_;
};

/// Maps a global sample index to a window index, epoch after epoch.
class WindowSampler {
 public:
  /// `windows` >= 1 windows per epoch, shuffled by `seed`.
  WindowSampler(uint64_t windows, uint64_t seed);
  /// Window of global sample `sample` (epoch = sample / windows).
  uint64_t window(uint64_t sample) const;
  uint64_t windows() const { return windows_; }

 private:
  uint64_t windows_;
  uint64_t seed_;
};

}  // namespace tsumugi

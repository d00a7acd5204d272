// Feistel permutation with cycle-walking: a seeded shuffle of the windows, computed per index.
#include <tsumugi/data/sampler.h>

#include "core/check.h"

namespace tsumugi {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

WindowPermutation::WindowPermutation(uint64_t size, uint64_t seed, uint64_t epoch) : size_(size) {
  TSU_CHECK(size >= 1, ValueError, "[sampler] a permutation needs at least one element");
  // The network permutes [0, 2^(2 * half_bits)), the smallest even power of two >= size, so
  // cycle-walking needs fewer than four passes on average.
  int bits = 2;
  while (bits < 64 && (uint64_t(1) << bits) < size) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (uint64_t(1) << half_bits_) - 1;
  const uint64_t base = splitmix64(splitmix64(seed) ^ splitmix64(epoch + 0x632BE59BD9B4E019ULL));
  for (int round = 0; round < kRounds; ++round) round_keys_[round] = splitmix64(base + round);
}

uint64_t WindowPermutation::encrypt(uint64_t value) const {
  uint64_t left = value >> half_bits_;
  uint64_t right = value & half_mask_;
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t next = left ^ (splitmix64(right ^ round_keys_[round]) & half_mask_);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

uint64_t WindowPermutation::operator()(uint64_t index) const {
  TSU_CHECK(index < size_, IndexError, "[sampler] index {} outside [0, {})", index, size_);
  // Cycle-walking: a bijection on the larger domain, applied until the value lands below size,
  // is a bijection on [0, size).
  uint64_t value = encrypt(index);
  while (value >= size_) value = encrypt(value);
  return value;
}

WindowSampler::WindowSampler(uint64_t windows, uint64_t seed) : windows_(windows), seed_(seed) {
  TSU_CHECK(windows >= 1, ValueError, "[sampler] no windows: the corpus is shorter than one sequence");
}

uint64_t WindowSampler::window(uint64_t sample) const {
  // Building the permutation costs a few hashes, less than caching it would cost in locking.
  return WindowPermutation(windows_, seed_, sample / windows_)(sample % windows_);
}

}  // namespace tsumugi

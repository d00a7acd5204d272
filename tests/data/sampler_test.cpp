// The window permutation: a bijection that depends only on (size, seed, epoch).
#include <tsumugi/data/sampler.h>

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace tsumugi {
namespace {

std::vector<uint64_t> images(uint64_t size, uint64_t seed, uint64_t epoch) {
  const WindowPermutation permutation(size, seed, epoch);
  std::vector<uint64_t> out(size);
  for (uint64_t i = 0; i < size; ++i) out[i] = permutation(i);
  return out;
}

TEST(WindowPermutation, IsABijectionForEverySize) {
  for (uint64_t size : {1, 2, 3, 4, 5, 17, 64, 100, 1000, 4097, 65537}) {
    std::vector<uint64_t> sorted = images(size, 42, 3);
    std::sort(sorted.begin(), sorted.end());
    std::vector<uint64_t> expected(size);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(sorted, expected) << "size " << size;
  }
}

TEST(WindowPermutation, DependsOnlyOnSeedAndEpoch) {
  EXPECT_EQ(images(1000, 7, 0), images(1000, 7, 0));
  EXPECT_NE(images(1000, 7, 0), images(1000, 7, 1));
  EXPECT_NE(images(1000, 7, 0), images(1000, 8, 0));
}

TEST(WindowPermutation, ShufflesWell) {
  const auto perm = images(10000, 1, 0);
  int fixed_points = 0, ascending_neighbours = 0;
  for (uint64_t i = 0; i < perm.size(); ++i) {
    fixed_points += perm[i] == i;
    if (i > 0) ascending_neighbours += perm[i] == perm[i - 1] + 1;
  }
  EXPECT_LT(fixed_points, 10);       // a random permutation has about one
  EXPECT_LT(ascending_neighbours, 10);
  // The first tenth of an epoch draws from the whole range, not from one part of it.
  uint64_t low = 0;
  for (uint64_t i = 0; i < 1000; ++i) low += perm[i] < 5000;
  EXPECT_GT(low, 400u);
  EXPECT_LT(low, 600u);
}

TEST(WindowPermutation, WorksOnHugeDomains) {
  const uint64_t size = (uint64_t(1) << 40) + 12345;
  const WindowPermutation permutation(size, 5, 0);
  for (uint64_t i : {uint64_t(0), uint64_t(1), size / 2, size - 1}) EXPECT_LT(permutation(i), size);
  EXPECT_NE(permutation(0), permutation(1));
}

TEST(WindowSampler, WalksEpochAfterEpoch) {
  const WindowSampler sampler(100, 9);
  const WindowPermutation epoch0(100, 9, 0), epoch2(100, 9, 2);
  EXPECT_EQ(sampler.window(37), epoch0(37));
  EXPECT_EQ(sampler.window(237), epoch2(37));
}

}  // namespace
}  // namespace tsumugi

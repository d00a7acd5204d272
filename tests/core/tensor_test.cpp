#include <gtest/gtest.h>
#include <tsumugi/core/ops.h>

#include <bit>
#include <cmath>

#include <omp.h>

using namespace tsumugi;

TEST(Tensor, CreationFunctionsFillValues) {
  EXPECT_EQ(zeros({2, 3}).to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(ones({4}, {.dtype = DType::i32}).to_vector<int32_t>(), std::vector<int32_t>(4, 1));
  EXPECT_EQ(full({2}, 2.5, {.dtype = DType::f64}).to_vector<double>(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(arange(5).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(1.0, 2.0, 0.25, {.dtype = DType::f32}).to_vector<float>(),
            (std::vector<float>{1.0f, 1.25f, 1.5f, 1.75f}));
  Tensor t = from_data<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Strides{3, 1}));
  EXPECT_FLOAT_EQ(t.select(1, 2).select(0, 1).item<float>(), 6.0f);
}

TEST(Tensor, FromDataRejectsWrongCount) {
  EXPECT_THROW(from_data<float>({1, 2, 3}, {2, 2}), ValueError);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = arange(0.0, 12.0, 1.0, {.dtype = DType::f32});
  Tensor v = t.view({3, 4});
  EXPECT_TRUE(v.shares_storage(t));
  Tensor tr = v.t();
  EXPECT_EQ(tr.shape(), (Shape{4, 3}));
  EXPECT_EQ(tr.strides(), (Strides{1, 4}));
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.contiguous().to_vector<float>(),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  // Writing through a view changes the base.
  v.select(0, 1).fill_(-1.0);
  EXPECT_EQ(t.to_vector<float>()[5], -1.0f);
}

TEST(Tensor, SliceNarrowPermuteExpand) {
  Tensor t = arange(0.0, 24.0, 1.0, {.dtype = DType::f32}).view({2, 3, 4});
  EXPECT_EQ(t.slice(2, 1, 4, 2).contiguous().to_vector<float>(), (std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23}));
  EXPECT_EQ(t.narrow(1, 1, 1).shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(t.slice(0, -1, 2).shape(), (Shape{1, 3, 4}));
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FLOAT_EQ(p.select(0, 3).select(0, 1).select(0, 2).item<float>(), 23.0f);
  Tensor e = from_data<float>({1, 2}, {2, 1}).expand({2, 3});
  EXPECT_EQ(e.strides(), (Strides{1, 0}));
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{1, 1, 1, 2, 2, 2}));
  EXPECT_THROW(t.view({5, -1}), ValueError);
  EXPECT_THROW(t.select(1, 3), IndexError);
  EXPECT_THROW(t.permute({0, 0, 1}), ValueError);
}

TEST(Tensor, ViewOfTransposeNeedsReshape) {
  Tensor t = zeros({3, 4}).t();
  EXPECT_THROW(t.view({12}), ValueError);
  Tensor r = t.reshape({12});
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_FALSE(r.shares_storage(t));
  // Splitting a dimension of a strided tensor is still a view.
  Tensor wide = zeros({2, 12});
  Tensor part = wide.narrow(1, 4, 8).view({2, 2, 4});
  EXPECT_TRUE(part.shares_storage(wide));
  EXPECT_EQ(part.strides(), (Strides{12, 4, 1}));
}

TEST(DType, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway: rounds up to the even neighbour.
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // just above halfway rounds up
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, Float16RoundsToNearestEvenWithSubnormalsAndOverflow) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);  // halfway to 2^16 rounds to even: inf
  EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(1.0f + 0x1p-11f), 0x3c00);   // tie, even stays
  EXPECT_EQ(float_to_f16(1.0f + 0x3p-11f), 0x3c02);   // tie, rounds up to even
  EXPECT_EQ(float_to_f16(0x1p-24f), 0x0001);          // smallest subnormal
  EXPECT_EQ(float_to_f16(0x1p-25f), 0x0000);          // half of it: tie to even zero
  EXPECT_EQ(float_to_f16(-0x1p-14f), 0x8400);         // smallest normal, negative
  EXPECT_EQ(f16_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_float(0xfbff), -65504.0f);
  EXPECT_TRUE(std::isinf(f16_to_float(0x7c00)));
  // Every finite half survives a round trip through float.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    if ((bits & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(bits))), bits) << bits;
  }
}

TEST(Tensor, ConvertsBetweenDtypes) {
  Tensor t = from_data<float>({1.5f, -2.25f, 3.0f});
  EXPECT_EQ(t.to(DType::bf16).to(DType::f32).to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 3.0f}));
  EXPECT_EQ(t.to(DType::f16).to(DType::f64).to_vector<double>(), (std::vector<double>{1.5, -2.25, 3.0}));
  EXPECT_EQ(t.to(DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3}));
  EXPECT_EQ(from_data<int64_t>({0, 7}).to(DType::boolean).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_THROW(parse_dtype("f8"), ValueError);
}

TEST(Tensor, PrintsReadably) {
  Tensor t = from_data<float>({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(t.str(), "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]], shape=(2, 2), dtype=f32)");
  EXPECT_EQ(arange(3).str(), "tensor([0, 1, 2], shape=(3,), dtype=i64)");
  const std::string big = zeros({100, 100}).str();
  EXPECT_NE(big.find("..."), std::string::npos);
  EXPECT_LT(big.size(), 2000u);
}

TEST(Device, ParsesNames) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
  EXPECT_THROW(Device::parse("tpu"), ValueError);
  EXPECT_THROW(Device::parse("cuda:x"), ValueError);
}

TEST(Random, PhiloxMatchesKnownAnswer) {
  // Known-answer test of Random123 for philox4x32_10 with zero counter and key.
  const auto zero = philox4x32({0, 0, 0, 0}, 0);
  EXPECT_EQ(zero, (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  const auto ones = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffffffffffull);
  EXPECT_EQ(ones, (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Random, SameSeedSameNumbersWhateverTheThreadCount) {
  Generator a(42), b(42), c(43);
  Tensor x = randn({1000, 100}, a);
  omp_set_num_threads(1);
  Tensor y = randn({1000, 100}, b);
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(x.to_vector<float>(), y.to_vector<float>());
  EXPECT_NE(x.to_vector<float>(), randn({1000, 100}, c).to_vector<float>());
  // Successive draws differ; the generator advances.
  EXPECT_NE(randn({10}, a).to_vector<float>(), randn({10}, a).to_vector<float>());
}

TEST(Random, DistributionsHaveTheRightMoments) {
  Generator gen(7);
  const std::vector<double> n = randn({200000}, gen, {.dtype = DType::f64}, 1.0, 2.0).to_vector<double>();
  double m = 0, v = 0;
  for (double x : n) m += x;
  m /= static_cast<double>(n.size());
  for (double x : n) v += (x - m) * (x - m);
  v /= static_cast<double>(n.size());
  EXPECT_NEAR(m, 1.0, 0.02);
  EXPECT_NEAR(std::sqrt(v), 2.0, 0.02);
  const std::vector<float> u = rand({100000}, gen).to_vector<float>();
  for (float x : u) ASSERT_TRUE(x >= 0.0f && x < 1.0f);
  const std::vector<int32_t> r = randint(3, 7, {10000}, gen).to_vector<int32_t>();
  std::array<int, 4> counts{};
  for (int32_t x : r) {
    ASSERT_TRUE(x >= 3 && x < 7);
    ++counts[static_cast<size_t>(x - 3)];
  }
  for (int c : counts) EXPECT_NEAR(c, 2500, 200);
}

TEST(Memory, CachingAllocatorReusesBlocks) {
  { Tensor warm = empty({1 << 20}); }
  const MemoryStats before = memory_stats();
  { Tensor again = empty({1 << 20}); }
  EXPECT_EQ(memory_stats().reserved, before.reserved);
  EXPECT_GE(memory_stats().peak_allocated, 4 << 20);
}

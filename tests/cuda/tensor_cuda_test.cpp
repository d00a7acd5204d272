// Device tensors: copies, conversions, views, the caching allocator and pinned memory.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::random_tensor;
using testing::relative_error;

TEST(CudaTensor, RoundTripKeepsEveryDtypeBitForBit) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u16,
                      DType::u32, DType::u8, DType::boolean}) {
    const Tensor x = (random_tensor({3, 5}, 1, -50, 50)).to(dtype);
    const Tensor back = x.to(Device::cuda(0)).to(Device::cpu());
    EXPECT_EQ(back.dtype(), dtype);
    EXPECT_EQ(back.to(DType::f64).to_vector<double>(), x.to(DType::f64).to_vector<double>()) << dtype_name(dtype);
  }
}

TEST(CudaTensor, ConversionOnTheDeviceMatchesTheCpu) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({4, 7}, 2, -300, 300);
  for (DType from : {DType::f32, DType::f64, DType::i32}) {
    for (DType to : {DType::f32, DType::bf16, DType::f16, DType::i64, DType::u8, DType::boolean}) {
      const Tensor src = x.to(from);
      const Tensor on_gpu = src.to(Device::cuda(0)).to(to).to(Device::cpu());
      EXPECT_EQ(on_gpu.to(DType::f64).to_vector<double>(), src.to(to).to(DType::f64).to_vector<double>())
          << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST(CudaTensor, StridedViewsCopyLikeTheCpu) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({4, 6, 5}, 3);
  const Tensor g = x.to(Device::cuda(0));
  const auto views = [](const Tensor& t) {
    return std::vector<Tensor>{t.transpose(0, 2).contiguous(), t.permute({1, 2, 0}).contiguous(),
                               t.slice(1, 1, 6, 2).contiguous(), t.select(2, 3).contiguous(),
                               t.narrow(0, 1, 2).unsqueeze(1).expand({2, 3, 6, 5}).contiguous()};
  };
  const std::vector<Tensor> want = views(x), got = views(g);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(got[i].device().is_cuda());
    EXPECT_EQ(got[i].to(Device::cpu()).to_vector<float>(), want[i].to_vector<float>()) << "view " << i;
  }
}

TEST(CudaTensor, FillAndCopyIntoAStridedDestination) {
  TSU_REQUIRE_GPU();
  Tensor g = zeros({3, 4}, {.device = Device::cuda(0)});
  Tensor column = g.select(1, 2);
  column.fill_(7.0);
  Tensor row = g.select(0, 1);
  row.copy_(from_data<float>({1, 2, 3, 4}));
  EXPECT_EQ(g.to(Device::cpu()).to_vector<float>(), (std::vector<float>{0, 0, 7, 0, 1, 2, 3, 4, 0, 0, 7, 0}));
}

TEST(CudaTensor, CachingAllocatorReusesBlocksAndCountsPeak) {
  TSU_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const MemoryStats before = memory_stats(gpu);
  {
    Tensor a = empty({1 << 20}, {.device = gpu});  // 4 MiB
    const MemoryStats during = memory_stats(gpu);
    EXPECT_GE(during.allocated - before.allocated, 4 << 20);
    EXPECT_GE(during.peak_allocated, during.allocated);
  }
  const MemoryStats freed = memory_stats(gpu);
  EXPECT_EQ(freed.allocated, before.allocated);
  {
    Tensor b = empty({1 << 20}, {.device = gpu});  // same size class: no new reservation
    EXPECT_EQ(memory_stats(gpu).reserved, freed.reserved);
  }
  empty_cache(gpu);
  EXPECT_LE(memory_stats(gpu).reserved, freed.reserved - (4 << 20));
}

TEST(CudaTensor, OutOfMemoryIsAnErrorThatSaysHowMuch) {
  TSU_REQUIRE_GPU();
  try {
    Tensor huge = empty({int64_t{1} << 40}, {.device = Device::cuda(0)});  // 4 TiB
    FAIL() << "allocated 4 TiB";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
  Tensor small = ones({4}, {.device = Device::cuda(0)});  // the device still works
  EXPECT_EQ(small.to(Device::cpu()).to_vector<float>(), std::vector<float>(4, 1.0f));
}

TEST(CudaTensor, PinnedBatchesCopyAsynchronouslyAndSafely) {
  TSU_REQUIRE_GPU();
  std::vector<Tensor> on_gpu;
  for (int i = 0; i < 8; ++i) {
    const Tensor batch = full({256, 1024}, i, {.dtype = DType::i32}).pin_memory();
    EXPECT_TRUE(batch.is_pinned());
    on_gpu.push_back(batch.to(Device::cuda(0), /*non_blocking=*/true));
  }  // each pinned batch is freed while its copy may be in flight, and reused by the next
  for (int i = 0; i < 8; ++i) {
    const std::vector<int32_t> v = on_gpu[i].to(Device::cpu()).to_vector<int32_t>();
    EXPECT_EQ(v.front(), i);
    EXPECT_EQ(v.back(), i);
  }
}

TEST(CudaTensor, HostKernelsRefuseDeviceTensorsWithAClearError) {
  TSU_REQUIRE_GPU();
  const Tensor g = ones({2}, {.device = Device::cuda(0)});
  EXPECT_THROW(g.data<float>(), NotImplementedError);
}

}  // namespace
}  // namespace tsumugi

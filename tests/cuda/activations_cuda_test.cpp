// Activations, rotary embedding and dropout on the GPU against the CPU, forward and backward;
// dropout's mask is the CPU's, bit for bit, for the same generator state.
#include "cuda/cuda_test_util.h"

#include <cmath>

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::grad_input;
using testing::OpFn;
using testing::random_tensor;

constexpr DType kDtypes[] = {DType::f32, DType::bf16};

TEST(CudaActivations, GeluMatchesCpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{gelu(in[0]), gelu(in[0].t())}; };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("gelu", fn, {grad_input({37, 129}, 1, -4, 4)}, dtype);
    expect_matches_cpu("gelu large", fn, {grad_input({2048, 3072}, 2, -4, 4)}, dtype);
  }
}

TEST(CudaActivations, SiluMatchesCpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{silu(in[0]), silu(in[0].t())}; };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("silu", fn, {grad_input({37, 129}, 3, -6, 6)}, dtype);
    expect_matches_cpu("silu large", fn, {grad_input({2048, 2817}, 4, -6, 6)}, dtype);
  }
}

TEST(CudaActivations, SwigluMatchesCpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{swiglu(in[0], in[1]), swiglu(in[0].t(), in[1].t())};
  };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("swiglu", fn, {grad_input({37, 129}, 5, -6, 6), grad_input({37, 129}, 6)}, dtype);
    expect_matches_cpu("swiglu large", fn, {grad_input({2048, 2817}, 7, -6, 6), grad_input({2048, 2817}, 8)}, dtype);
  }
}

TEST(CudaActivations, SwigluOnDifferentDevicesIsAnError) {
  TSU_REQUIRE_GPU();
  const Tensor gate = random_tensor({3, 4}, 9);
  EXPECT_THROW(swiglu(gate.to(Device::cuda(0)), gate), ValueError);
}

TEST(CudaActivations, RopeMatchesCpu) {
  TSU_REQUIRE_GPU();
  // (B, T, H, head_dim): odd sizes, Llama's head_dim 128, and positions far from 0, where the
  // angle's float rounding matters (the GPU must round it as the CPU does).
  const std::vector<std::tuple<Shape, double, int64_t>> cases = {
      {{2, 37, 3, 64}, 10000.0, 0}, {{1, 5, 2, 6}, 10000.0, 3}, {{2, 300, 4, 128}, 500000.0, 4000},
      {{1, 1, 32, 128}, 10000.0, 8191}};
  for (DType dtype : kDtypes) {
    for (const auto& [shape, theta, offset] : cases) {
      const OpFn fn = [theta, offset](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{rope(in[0], theta, offset)};
      };
      expect_matches_cpu("rope " + shape_str(shape) + " offset " + std::to_string(offset), fn, {grad_input(shape, 10)},
                         dtype);
    }
  }
  // A non-contiguous input (a transposed view of (B, H, T, hd)) is rotated like its copy.
  const OpFn transposed = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{rope(in[0].transpose(1, 2), 10000.0, 7)};
  };
  expect_matches_cpu("rope transposed", transposed, {grad_input({2, 3, 11, 16}, 11)});
}

// CPU and GPU dropout of x from generators in the same state.
void expect_same_dropout(const Tensor& x, double p, uint64_t seed, uint64_t stream, uint64_t offset, DType dtype) {
  Generator on_cpu(seed, stream), on_gpu(seed, stream);
  on_cpu.set_offset(offset);
  on_gpu.set_offset(offset);
  const Tensor want = dropout(x.to(dtype).to(DType::f32), p, on_cpu);
  const Tensor got = dropout(x.to(dtype).to(Device::cuda(0)), p, on_gpu);
  EXPECT_TRUE(got.device().is_cuda());
  EXPECT_EQ(on_gpu.offset(), on_cpu.offset()) << "both consume the same counter blocks";
  const std::vector<float> w = want.to_vector<float>();
  const std::vector<float> g = got.to(Device::cpu()).to(DType::f32).to_vector<float>();
  ASSERT_EQ(w.size(), g.size());
  int64_t mismatched = 0, dropped = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    mismatched += (w[i] == 0) != (g[i] == 0);
    dropped += w[i] == 0;
  }
  EXPECT_EQ(mismatched, 0) << "seed " << seed << " stream " << stream << " offset " << offset;
  const double n = static_cast<double>(w.size());
  EXPECT_NEAR(static_cast<double>(dropped) / n, p, 5 * std::sqrt(p * (1 - p) / n));  // five standard deviations
  // In f32 the kept values are x * float(1 / (1 - p)) on both sides: the same bits.
  if (dtype == DType::f32) {
    EXPECT_EQ(g, w);
  }
}

TEST(CudaActivations, DropoutMaskIsTheCpuMaskBitForBit) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({1001, 37}, 12, 0.5, 1.5);  // never 0, so a 0 means dropped
  for (DType dtype : kDtypes) {
    expect_same_dropout(x, 0.1, 1234, 0, 0, dtype);
    expect_same_dropout(x, 0.5, 42, 7, 99, dtype);
    // Counters across the 32-bit boundary of the block index, and a stream with high bits set.
    expect_same_dropout(x, 0.3, 0x0123456789abcdefull, 0xfedcba9876543210ull, (uint64_t{1} << 32) - 1000, dtype);
  }
  // An odd number of elements: the last Philox block is used in part.
  expect_same_dropout(random_tensor({13, 7}, 13, 0.5, 1.5), 0.25, 5, 1, 3, DType::f32);
}

TEST(CudaActivations, DropoutGradientMatchesCpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) {
    Generator gen(77, 3);  // the same state for the CPU and the GPU run
    return std::vector<Tensor>{dropout(in[0], 0.2, gen)};
  };
  for (DType dtype : kDtypes) expect_matches_cpu("dropout", fn, {grad_input({129, 65}, 14)}, dtype);
}

}  // namespace
}  // namespace tsumugi

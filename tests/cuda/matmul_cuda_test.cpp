// GEMMs on the GPU (cuBLASLt): matmul, linear and linear_gelu against the CPU, forward and
// backward, in f32 (exact fp32, or TF32 when allowed), bf16 and f16; and bitwise determinism.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::random_tensor;

Tensor param(const Shape& shape, uint64_t seed) { return random_tensor(shape, seed).set_requires_grad(); }

// Turns TF32 on for one scope, and off again even when an assertion fails.
struct Tf32Scope {
  Tf32Scope() { set_allow_tf32(true); }
  ~Tf32Scope() { set_allow_tf32(false); }
};

const DType kHalfTypes[] = {DType::bf16, DType::f16};

TEST(CudaMatmul, TwoDimensionalMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; };
  expect_matches_cpu("matmul 2-d", fn, {param({37, 53}, 1), param({53, 29}, 2)});
  for (DType dtype : kHalfTypes) expect_matches_cpu("matmul 2-d", fn, {param({37, 53}, 1), param({53, 29}, 2)}, dtype);
  // A vector on either side.
  expect_matches_cpu("matmul vector", fn, {param({53}, 3), param({53, 29}, 4)});
  expect_matches_cpu("matmul vector", fn, {param({37, 53}, 5), param({53}, 6)});
}

TEST(CudaMatmul, BatchedMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; };
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    expect_matches_cpu("matmul batched", fn, {param({3, 37, 53}, 7), param({3, 53, 29}, 8)}, dtype);
    // A 2-D right operand folds the batch into the rows.
    expect_matches_cpu("matmul batched x 2-d", fn, {param({2, 3, 37, 53}, 9), param({53, 29}, 10)}, dtype);
  }
}

TEST(CudaMatmul, BroadcastBatchMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; };
  for (DType dtype : {DType::f32, DType::bf16}) {
    // One matrix repeated over the batch (a batch stride of 0).
    expect_matches_cpu("matmul broadcast", fn, {param({1, 17, 23}, 11), param({4, 23, 11}, 12)}, dtype);
    expect_matches_cpu("matmul broadcast", fn, {param({17, 23}, 13), param({4, 23, 11}, 14)}, dtype);
    // Broadcast dimensions that do not collapse into one stride.
    expect_matches_cpu("matmul broadcast", fn, {param({2, 1, 17, 23}, 15), param({5, 23, 11}, 16)}, dtype);
  }
}

TEST(CudaMatmul, TransposedViewsMatchCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{matmul(in[0].t(), in[1]), matmul(in[0].t(), in[2].t()),
                               matmul(in[3].transpose(-1, -2), in[4]), matmul(in[4].transpose(-1, -2), in[3])};
  };
  const std::vector<Tensor> inputs = {param({53, 37}, 17), param({53, 29}, 18), param({29, 53}, 19),
                                      param({3, 41, 19}, 20), param({3, 41, 27}, 21)};
  expect_matches_cpu("matmul transposed", fn, inputs);
  expect_matches_cpu("matmul transposed", fn, inputs, DType::bf16);
  // A view that is neither row- nor column-major is copied first.
  const auto strided = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{matmul(in[0].slice(1, 0, 106, 2), in[1].slice(1, 0, 58, 2))};
  };
  expect_matches_cpu("matmul strided", strided, {param({37, 106}, 22), param({53, 58}, 23)});
}

TEST(CudaMatmul, F64MatchesCpuExactly) {
  TSU_REQUIRE_GPU();
  const Tensor a = random_tensor({19, 33}, 24).to(DType::f64), b = random_tensor({33, 7}, 25).to(DType::f64);
  EXPECT_LT(testing::relative_error(matmul(a.to(Device::cuda(0)), b.to(Device::cuda(0))), matmul(a, b)), 1e-12);
}

TEST(CudaMatmul, MixedDevicesAreAnError) {
  TSU_REQUIRE_GPU();
  EXPECT_THROW(matmul(random_tensor({2, 3}, 1).to(Device::cuda(0)), random_tensor({3, 2}, 2)), ValueError);
  EXPECT_THROW(linear(random_tensor({2, 3}, 1).to(Device::cuda(0)), random_tensor({4, 3}, 2)), ValueError);
}

TEST(CudaLinear, WithAndWithoutBiasMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto with_bias = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear(in[0], in[1], in[2])};
  };
  const auto without_bias = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{linear(in[0], in[1])}; };
  // GPT-2's Conv1D weight is stored (in, out) and used transposed.
  const auto conv1d = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear(in[0], in[1].t(), in[2])};
  };
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    expect_matches_cpu("linear", with_bias, {param({4, 33, 70}, 26), param({45, 70}, 27), param({45}, 28)}, dtype);
    expect_matches_cpu("linear", without_bias, {param({4, 33, 70}, 29), param({45, 70}, 30)}, dtype);
    expect_matches_cpu("linear conv1d", conv1d, {param({33, 70}, 31), param({70, 45}, 32), param({45}, 33)}, dtype);
  }
}

TEST(CudaLinear, LinearGeluMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto with_bias = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear_gelu(in[0], in[1], in[2])};
  };
  const auto without_bias = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear_gelu(in[0], in[1])};
  };
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    // 48 outputs: the fused epilogue (its aux matrix needs a multiple of 8); 45: the unfused path.
    for (int64_t out : {48, 45}) {
      expect_matches_cpu("linear_gelu " + std::to_string(out),
                         with_bias, {param({3, 33, 70}, 34), param({out, 70}, 35), param({out}, 36)}, dtype);
      expect_matches_cpu("linear_gelu " + std::to_string(out),
                         without_bias, {param({3, 33, 70}, 37), param({out, 70}, 38)}, dtype);
    }
  }
}

TEST(CudaMatmul, Tf32IsAccurateTo2e3WhenAllowed) {
  TSU_REQUIRE_GPU();
  Tf32Scope tf32;
  const auto fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{matmul(in[0], in[1]), linear(in[0], in[2], in[3])};
  };
  expect_matches_cpu("matmul tf32", fn, {param({65, 300}, 39), param({300, 47}, 40), param({47, 300}, 41),
                                         param({47}, 42)},
                     DType::f32, 2e-3);
}

TEST(CudaLinear, LargeGemmMatchesCpu) {
  TSU_REQUIRE_GPU();
  // (1024, 768) x (3072, 768)^T: GPT-2's MLP up-projection for one sequence.
  const auto fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear(in[0], in[1], in[2])};
  };
  const std::vector<Tensor> inputs = {param({1024, 768}, 43), param({3072, 768}, 44), param({3072}, 45)};
  expect_matches_cpu("linear large", fn, inputs);
  expect_matches_cpu("linear large", fn, inputs, DType::bf16);
  expect_matches_cpu("linear_gelu large", [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{linear_gelu(in[0], in[1], in[2])};
  }, inputs, DType::bf16);
}

TEST(CudaLinear, SameInputsGiveTheSameBits) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({1024, 768}, 46).to(DType::bf16).to(Device::cuda(0));
  const Tensor w = random_tensor({3072, 768}, 47).to(DType::bf16).to(Device::cuda(0)).set_requires_grad();
  const auto run = [&] {
    w.zero_grad();
    Tensor y = linear(x, w);
    sum(y.to(DType::f32)).backward();
    return std::pair{y.to(DType::f32).to(Device::cpu()).to_vector<float>(),
                     w.grad().to(DType::f32).to(Device::cpu()).to_vector<float>()};
  };
  const auto first = run();
  for (int i = 0; i < 3; ++i) {
    const auto again = run();
    EXPECT_EQ(again.first, first.first) << "forward differs on run " << i;
    EXPECT_EQ(again.second, first.second) << "weight gradient differs on run " << i;
  }
  // A tall-skinny product with a long inner dimension, where split-K would be chosen.
  const Tensor a = random_tensor({64, 16384}, 48).to(DType::bf16).to(Device::cuda(0));
  const Tensor b = random_tensor({16384, 64}, 49).to(DType::bf16).to(Device::cuda(0));
  const auto c1 = matmul(a, b).to(DType::f32).to(Device::cpu()).to_vector<float>();
  const auto c2 = matmul(a, b).to(DType::f32).to(Device::cpu()).to_vector<float>();
  EXPECT_EQ(c1, c2);
}

}  // namespace
}  // namespace tsumugi

// Row-wise kernels on the GPU: softmax, log_softmax, LayerNorm, RMSNorm and the fused residual
// forms, forward and backward against the CPU, on odd and on realistic shapes; and bitwise
// determinism of the parameter gradients.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::random_tensor;

Tensor param(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return random_tensor(shape, seed, lo, hi).set_requires_grad();
}

const DType kDtypes[] = {DType::f32, DType::bf16};
// Model widths of GPT-2 124M, a 1B Llama and a 7B Llama, with 8 sequences of 1024 tokens.
const int64_t kWidths[] = {768, 2048, 4096};
constexpr int64_t kRealisticRows = 8 * 1024;

TEST(CudaNorms, SoftmaxMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto last = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{softmax(in[0])}; };
  const auto first = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{softmax(in[0], 0)}; };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("softmax", last, {param({37, 1000}, 1, -4, 4)}, dtype);  // 128-bit packs
    expect_matches_cpu("softmax", last, {param({3, 5, 1001}, 2, -4, 4)}, dtype);  // element by element
    expect_matches_cpu("softmax dim 0", first, {param({37, 45}, 3, -4, 4)}, dtype);
    expect_matches_cpu("softmax large", last, {param({1024, 32768}, 4, -8, 8)}, dtype);
  }
}

TEST(CudaNorms, LogSoftmaxMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto last = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{log_softmax(in[0])}; };
  const auto middle = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{log_softmax(in[0], 1)}; };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("log_softmax", last, {param({37, 1000}, 5, -4, 4)}, dtype);
    expect_matches_cpu("log_softmax", last, {param({3, 5, 1001}, 6, -4, 4)}, dtype);
    expect_matches_cpu("log_softmax dim 1", middle, {param({3, 37, 5}, 7, -4, 4)}, dtype);
  }
}

TEST(CudaNorms, LayerNormMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{layer_norm(in[0], in[1], in[2], 1e-5)};
  };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("layer_norm odd", fn, {param({3, 37, 101}, 8, -2, 3), param({101}, 9), param({101}, 10)},
                       dtype);
    for (int64_t d : kWidths)
      expect_matches_cpu("layer_norm " + std::to_string(d), fn,
                         {param({kRealisticRows, d}, 11, -2, 3), param({d}, 12), param({d}, 13)}, dtype);
  }
}

TEST(CudaNorms, RmsNormMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{rms_norm(in[0], in[1], 1e-6)}; };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("rms_norm odd", fn, {param({3, 37, 101}, 14, -2, 3), param({101}, 15)}, dtype);
    for (int64_t d : kWidths)
      expect_matches_cpu("rms_norm " + std::to_string(d), fn, {param({kRealisticRows, d}, 16, -2, 3), param({d}, 17)},
                         dtype);
  }
}

TEST(CudaNorms, AddLayerNormMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) {
    const auto [s, y] = add_layer_norm(in[0], in[1], in[2], in[3], 1e-5);
    return std::vector<Tensor>{s, y};
  };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("add_layer_norm odd", fn,
                       {param({5, 7, 101}, 18), param({5, 7, 101}, 19), param({101}, 20), param({101}, 21)}, dtype);
    expect_matches_cpu("add_layer_norm 768", fn,
                       {param({kRealisticRows, 768}, 22), param({kRealisticRows, 768}, 23), param({768}, 24),
                        param({768}, 25)},
                       dtype);
  }
  // Only the normalised output used (s's gradient never arrives), and only the sum.
  const auto normed_only = [](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{add_layer_norm(in[0], in[1], in[2], in[3]).second};
  };
  expect_matches_cpu("add_layer_norm y only", normed_only,
                     {param({9, 64}, 26), param({9, 64}, 27), param({64}, 28), param({64}, 29)});
}

TEST(CudaNorms, AddRmsNormMatchesCpu) {
  TSU_REQUIRE_GPU();
  const auto fn = [](const std::vector<Tensor>& in) {
    const auto [s, y] = add_rms_norm(in[0], in[1], in[2], 1e-6);
    return std::vector<Tensor>{s, y};
  };
  for (DType dtype : kDtypes) {
    expect_matches_cpu("add_rms_norm odd", fn, {param({5, 7, 101}, 30), param({5, 7, 101}, 31), param({101}, 32)},
                       dtype);
    expect_matches_cpu("add_rms_norm 2048", fn,
                       {param({kRealisticRows, 2048}, 33), param({kRealisticRows, 2048}, 34), param({2048}, 35)},
                       dtype);
  }
}

TEST(CudaNorms, ParameterGradientsAreDeterministic) {
  TSU_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const Tensor x = random_tensor({kRealisticRows, 768}, 36).to(DType::bf16).to(gpu);
  const Tensor g = random_tensor({kRealisticRows, 768}, 37).to(DType::bf16).to(gpu);
  const Tensor w = random_tensor({768}, 38).to(DType::bf16).to(gpu).set_requires_grad();
  const Tensor b = random_tensor({768}, 39).to(DType::bf16).to(gpu).set_requires_grad();
  const auto run = [&] {
    w.zero_grad();
    b.zero_grad();
    layer_norm(x, w, b).backward(g);
    return std::pair{w.grad().to(DType::f32).to(Device::cpu()).to_vector<float>(),
                     b.grad().to(DType::f32).to(Device::cpu()).to_vector<float>()};
  };
  const auto first = run();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run(), first) << "run " << i;
}

}  // namespace
}  // namespace tsumugi

// The fused softmax + cross-entropy on the GPU against the CPU: ignored rows, z-loss, the
// vocabularies of GPT-2 (32,768 here) and Llama 3 (128,256), and a deterministic mean.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::random_tensor;

constexpr int64_t kIgnore = -100;

Tensor logits_param(int64_t rows, int64_t vocab, uint64_t seed) {
  return random_tensor({rows, vocab}, seed, -6.0, 6.0).set_requires_grad();
}

// Random targets in [0, vocab), every third row ignored.
Tensor targets_for(int64_t rows, int64_t vocab, uint64_t seed, DType dtype = DType::i64) {
  Generator gen(seed);
  std::vector<int64_t> t = randint(0, vocab, {rows}, gen, {.dtype = DType::i64}).to_vector<int64_t>();
  for (size_t i = 0; i < t.size(); i += 3) t[i] = kIgnore;
  return from_data<int64_t>(t).to(dtype);
}

testing::OpFn loss_fn(double z_loss) {
  return [z_loss](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{cross_entropy(in[0], in[1], kIgnore, z_loss)};
  };
}

TEST(CudaCrossEntropy, MatchesCpuWithIgnoredRows) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    expect_matches_cpu("cross_entropy", loss_fn(0.0), {logits_param(37, 1000, 1), targets_for(37, 1000, 2)}, dtype);
    // A vocabulary that is not a multiple of 8 is read element by element; i32 targets.
    expect_matches_cpu("cross_entropy odd vocab", loss_fn(0.0),
                       {logits_param(29, 1001, 3), targets_for(29, 1001, 4, DType::i32)}, dtype);
  }
}

TEST(CudaCrossEntropy, ZLossMatchesCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16})
    expect_matches_cpu("cross_entropy z-loss", loss_fn(1e-2), {logits_param(37, 1000, 5), targets_for(37, 1000, 6)},
                       dtype);
}

TEST(CudaCrossEntropy, LargeVocabulariesMatchCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    expect_matches_cpu("cross_entropy 32768", loss_fn(1e-4),
                       {logits_param(256, 32768, 7), targets_for(256, 32768, 8)}, dtype);
    expect_matches_cpu("cross_entropy 128256", loss_fn(0.0),
                       {logits_param(24, 128256, 9), targets_for(24, 128256, 10, DType::i32)}, dtype);
  }
}

TEST(CudaCrossEntropy, Bf16LogitsGiveAnF32LossAndBf16Gradient) {
  TSU_REQUIRE_GPU();
  Tensor logits = random_tensor({8, 50}, 11).to(DType::bf16).to(Device::cuda(0)).set_requires_grad();
  Tensor loss = cross_entropy(logits, targets_for(8, 50, 12).to(Device::cuda(0)));
  EXPECT_EQ(loss.dtype(), DType::f32);
  loss.backward();
  EXPECT_EQ(logits.grad().dtype(), DType::bf16);
}

TEST(CudaCrossEntropy, AllIgnoredGivesZeroLossAndGradient) {
  TSU_REQUIRE_GPU();
  Tensor logits = random_tensor({6, 40}, 13).to(Device::cuda(0)).set_requires_grad();
  const Tensor targets = full({6}, static_cast<double>(kIgnore), {.dtype = DType::i64, .device = Device::cuda(0)});
  Tensor loss = cross_entropy(logits, targets);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  for (float v : logits.grad().to(Device::cpu()).to_vector<float>()) ASSERT_EQ(v, 0.0f);
}

TEST(CudaCrossEntropy, TargetOutsideVocabularyGivesNaN) {
  TSU_REQUIRE_GPU();
  const Tensor logits = random_tensor({3, 10}, 14).to(Device::cuda(0));
  const Tensor targets = from_data<int64_t>({1, 10, 2}).to(Device::cuda(0));
  EXPECT_TRUE(std::isnan(cross_entropy(logits, targets).item<double>()));
  EXPECT_THROW(cross_entropy(logits, from_data<int64_t>({1, 2, 3})), ValueError);  // targets on the CPU
}

TEST(CudaCrossEntropy, SameInputsGiveTheSameBits) {
  TSU_REQUIRE_GPU();
  const Tensor logits = random_tensor({2048, 32768}, 15, -6, 6).to(DType::bf16).to(Device::cuda(0));
  const Tensor targets = targets_for(2048, 32768, 16).to(Device::cuda(0));
  const float first = cross_entropy(logits, targets, kIgnore, 1e-4).item<float>();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(cross_entropy(logits, targets, kIgnore, 1e-4).item<float>(), first);
}

}  // namespace
}  // namespace tsumugi

// Embedding, cat and split on the GPU against the CPU.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::random_tensor;

Tensor random_ids(const Shape& shape, int64_t vocab, uint64_t seed, DType dtype = DType::i32) {
  Generator gen(seed);
  return randint(0, vocab, shape, gen, {.dtype = dtype});
}

std::vector<Tensor> embed(const std::vector<Tensor>& in) { return {embedding(in[0], in[1])}; }

TEST(CudaIndexing, EmbeddingMatchesCpuWithRepeatedIds) {
  TSU_REQUIRE_GPU();
  // d = 37 takes the unaligned paths (2-byte rows, scalar gradient adds); d = 64 the 16-byte ones.
  for (int64_t d : {37, 64}) {
    for (DType index : {DType::i32, DType::i64, DType::u16}) {
      const Tensor w = random_tensor({50, d}, 1).set_requires_grad(true);
      const Tensor ids = random_ids({3, 17}, 50, 2, index);  // 51 ids from 50: repeats
      for (DType dtype : {DType::f32, DType::bf16})
        expect_matches_cpu("embedding d=" + std::to_string(d), embed, {w, ids}, dtype);
    }
  }
}

TEST(CudaIndexing, EmbeddingBackwardSumsEveryRowOfOneRepeatedId) {
  TSU_REQUIRE_GPU();
  const Tensor w = random_tensor({20, 48}, 3).set_requires_grad(true);
  const Tensor ids = full({1000}, 7, {.dtype = DType::i32});
  for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu("embedding all id 7", embed, {w, ids}, dtype);

  const Tensor wg = w.detach().to(Device::cuda(0)).set_requires_grad(true);
  sum(embedding(wg, ids.to(Device::cuda(0)))).backward();
  const std::vector<float> grad = wg.grad().to(Device::cpu()).to_vector<float>();
  for (int64_t row = 0; row < 20; ++row)
    for (int64_t c = 0; c < 48; ++c) ASSERT_EQ(grad[row * 48 + c], row == 7 ? 1000.0f : 0.0f) << row << ", " << c;
}

TEST(CudaIndexing, EmbeddingMatchesCpuAtTrainingSize) {
  TSU_REQUIRE_GPU();
  // 8192 tokens of a 32768 vocabulary, d 768: a GPT-2-small step.
  const Tensor w = random_tensor({32768, 768}, 4).set_requires_grad(true);
  const Tensor ids = random_ids({8, 1024}, 32768, 5);
  for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu("embedding 8192 tokens", embed, {w, ids}, dtype);
}

TEST(CudaIndexing, EmbeddingBackwardIsBitwiseDeterministic) {
  TSU_REQUIRE_GPU();
  // Skewed ids: every other position holds one of 4 ids, so long runs are summed.
  std::vector<int32_t> skewed = random_ids({8192}, 4096, 7).to_vector<int32_t>();
  for (size_t i = 0; i < skewed.size(); i += 2) skewed[i] = static_cast<int32_t>(i / 2 % 4);
  const Tensor ids = from_data<int32_t>(skewed).to(Device::cuda(0));
  const Tensor g = random_tensor({8192, 256}, 9).to(DType::bf16).to(Device::cuda(0));
  for (DType dtype : {DType::f32, DType::bf16}) {
    std::vector<std::vector<float>> runs;
    for (int run = 0; run < 2; ++run) {
      const Tensor w = random_tensor({4096, 256}, 10).to(dtype).to(Device::cuda(0)).set_requires_grad(true);
      embedding(w, ids).backward(g.to(dtype));
      runs.push_back(w.grad().to(DType::f32).to(Device::cpu()).to_vector<float>());
    }
    EXPECT_EQ(runs[0], runs[1]) << dtype_name(dtype);
  }
}

TEST(CudaIndexing, EmbeddingRejectsIdsOutsideTheVocabulary) {
  TSU_REQUIRE_GPU();
  const Tensor w = random_tensor({10, 4}, 11).to(Device::cuda(0));
  EXPECT_THROW(embedding(w, from_data<int32_t>({3, 10}).to(Device::cuda(0))), IndexError);
  EXPECT_THROW(embedding(w, from_data<int64_t>({-1}).to(Device::cuda(0))), IndexError);
  EXPECT_THROW(embedding(w, from_data<int32_t>({3})), ValueError);  // ids on the CPU
  EXPECT_EQ(embedding(w, from_data<int32_t>({9}).to(Device::cuda(0))).device(), Device::cuda(0));
}

TEST(CudaIndexing, CatMatchesCpu) {
  TSU_REQUIRE_GPU();
  const Tensor a = random_tensor({3, 5, 7}, 12).set_requires_grad(true);
  const Tensor b = random_tensor({3, 2, 7}, 13).set_requires_grad(true);
  const Tensor c = random_tensor({3, 9, 7}, 14).set_requires_grad(true);
  for (DType dtype : {DType::f32, DType::bf16}) {
    expect_matches_cpu("cat dim 1", [](const auto& in) { return std::vector<Tensor>{cat({in[0], in[1], in[2]}, 1)}; },
                       {a, b, c}, dtype);
    expect_matches_cpu("cat dim -1",
                       [](const auto& in) { return std::vector<Tensor>{cat({in[0].transpose(1, 2), in[1].transpose(1, 2)}, -1)}; },
                       {a, b}, dtype);
  }
  EXPECT_THROW(cat({a.to(Device::cuda(0)), b}, 1), ValueError);
}

TEST(CudaIndexing, SplitMatchesCpu) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({4, 5, 9}, 15).set_requires_grad(true);
  for (DType dtype : {DType::f32, DType::bf16}) {
    expect_matches_cpu("split dim 2", [](const auto& in) { return split(in[0], {2, 3, 4}, 2); }, {x}, dtype);
    // Only some parts used: the unused parts' gradients are zero on the GPU too.
    expect_matches_cpu("split, part used",
                       [](const auto& in) { return std::vector<Tensor>{split(in[0], {1, 4}, 1)[1] * 2.0}; }, {x},
                       dtype);
  }
}

}  // namespace
}  // namespace tsumugi

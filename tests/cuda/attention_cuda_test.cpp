// Fused causal attention on the GPU against the CPU kernel: outputs and the gradients of q, k, v.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::random_tensor;

std::vector<Tensor> attend(const std::vector<Tensor>& in) { return {causal_attention(in[0], in[1], in[2])}; }

// q and k in [-2, 2): scores spread over a few units, so the softmax is far from uniform.
std::vector<Tensor> attention_inputs(int64_t batch, int64_t queries, int64_t keys, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, uint64_t seed) {
  return {random_tensor({batch, queries, q_heads, head_dim}, seed, -2, 2).set_requires_grad(true),
          random_tensor({batch, keys, kv_heads, head_dim}, seed + 1, -2, 2).set_requires_grad(true),
          random_tensor({batch, keys, kv_heads, head_dim}, seed + 2).set_requires_grad(true)};
}

TEST(CudaAttention, MatchesCpuOverLengthsHeadsAndHeadDims) {
  TSU_REQUIRE_GPU();
  uint64_t seed = 1;
  for (int64_t t : {1, 7, 65, 200}) {
    for (int64_t kv_heads : {4, 2, 1}) {
      for (int64_t head_dim : {16, 64, 128}) {
        const std::string name = "T=" + std::to_string(t) + " Hkv=" + std::to_string(kv_heads) +
                                 " hd=" + std::to_string(head_dim);
        std::vector<Tensor> in = attention_inputs(2, t, t, 4, kv_heads, head_dim, seed += 3);
        // With one key the softmax is constant: dq and dk are exactly zero, and comparing the
        // rounding noise of two zero gradients relatively says nothing. Only v gets a gradient.
        if (t == 1) in = {in[0].detach(), in[1].detach(), in[2]};
        for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu(name, attend, in, dtype);
      }
    }
  }
}

TEST(CudaAttention, MatchesCpuForOddHeadDimsAndHalfPrecision) {
  TSU_REQUIRE_GPU();
  for (int64_t head_dim : {24, 40, 100}) {
    const std::vector<Tensor> in = attention_inputs(1, 70, 70, 6, 3, head_dim, 100 + head_dim);
    for (DType dtype : {DType::f32, DType::bf16, DType::f16})
      expect_matches_cpu("hd=" + std::to_string(head_dim), attend, in, dtype);
  }
}

TEST(CudaAttention, MatchesCpuWhenKeysPrecedeTheQueries) {
  TSU_REQUIRE_GPU();
  // A KV cache: 9 queries at positions 61..69 see keys 0 .. their position.
  const std::vector<Tensor> in = attention_inputs(2, 9, 70, 4, 2, 64, 200);
  for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu("S > T", attend, in, dtype);
}

TEST(CudaAttention, MatchesCpuOnStridedViewsOfOneQkvProjection) {
  TSU_REQUIRE_GPU();
  // GPT-2 splits one (B, T, 3 * H * hd) projection into q, k and v views without copying.
  const Tensor qkv = random_tensor({2, 77, 3 * 4 * 32}, 300, -2, 2).set_requires_grad(true);
  const auto fn = [](const std::vector<Tensor>& in) {
    const std::vector<Tensor> parts = split(in[0], {128, 128, 128}, 2);
    const Shape heads{2, 77, 4, 32};
    return std::vector<Tensor>{causal_attention(parts[0].view(heads), parts[1].view(heads), parts[2].view(heads))};
  };
  for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu("qkv views", fn, {qkv}, dtype);
}

TEST(CudaAttention, MatchesCpuAtTrainingSize) {
  TSU_REQUIRE_GPU();
  const std::vector<Tensor> in = attention_inputs(1, 1024, 1024, 8, 2, 128, 400);
  for (DType dtype : {DType::f32, DType::bf16}) expect_matches_cpu("T=1024 hd=128", attend, in, dtype);
}

TEST(CudaAttention, BackwardIsBitwiseDeterministic) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    std::vector<Tensor> in;
    for (const Tensor& x : attention_inputs(2, 200, 200, 8, 2, 64, 500))
      in.push_back(x.detach().to(dtype).to(Device::cuda(0)).set_requires_grad(true));
    const Tensor w = random_tensor({2, 200, 8, 64}, 501).to(dtype).to(Device::cuda(0));
    std::vector<std::vector<float>> first;
    for (int run = 0; run < 2; ++run) {
      for (Tensor& x : in) x.zero_grad();
      causal_attention(in[0], in[1], in[2]).backward(w);
      for (size_t i = 0; i < in.size(); ++i) {
        const std::vector<float> grad = in[i].grad().to(DType::f32).to(Device::cpu()).to_vector<float>();
        if (run == 0) first.push_back(grad);
        else EXPECT_EQ(grad, first[i]) << dtype_name(dtype) << " gradient of input " << i;
      }
    }
  }
}

TEST(CudaAttention, RejectsInputsOnDifferentDevices) {
  TSU_REQUIRE_GPU();
  const std::vector<Tensor> in = attention_inputs(1, 4, 4, 2, 1, 16, 600);
  EXPECT_THROW(causal_attention(in[0].detach().to(Device::cuda(0)), in[1].detach(), in[2].detach()), ValueError);
}

}  // namespace
}  // namespace tsumugi

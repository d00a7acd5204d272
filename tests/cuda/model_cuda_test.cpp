// Whole models on the GPU: GPT-2 and Llama forward and backward against the CPU, in f32 and in
// bf16 (with fp32 master weights in AdamW), and a tiny model's loss curve during training.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::relative_error;

ModelConfig tiny_config(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = arch == Arch::llama ? 2 : 0;
  c.dim = 64;
  c.vocab = 97;
  c.context = 32;
  return c;
}

// A model initialised from `seed`, optionally moved to the GPU and converted to `dtype`.
std::shared_ptr<CausalLM> build(const ModelConfig& config, Device device, DType dtype) {
  std::shared_ptr<CausalLM> model = make_model(config);
  model->init_weights(1234);
  model->to(device);
  model->to(dtype);
  return model;
}

Tensor batch_ids(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  return randint(0, vocab, {batch, length}, gen, {.dtype = DType::i64});
}

// Forward and backward of the next-token loss on both devices; compares logits, loss and every
// parameter's gradient.
void expect_model_matches_cpu(Arch arch, DType dtype, double tol) {
  const ModelConfig config = tiny_config(arch);
  auto cpu = build(config, Device::cpu(), DType::f32);
  auto gpu = build(config, Device::cuda(0), dtype);
  const Tensor ids = batch_ids(3, 17, config.vocab, 7);
  const Tensor inputs = ids.slice(1, 0, 16), targets = ids.slice(1, 1, 17);

  const Tensor logits_cpu = cpu->forward(inputs);
  const Tensor logits_gpu = gpu->forward(inputs.to(Device::cuda(0)));
  ASSERT_TRUE(logits_gpu.device().is_cuda());
  EXPECT_LT(relative_error(logits_gpu.to(DType::f32), logits_cpu), tol) << "logits";

  const Tensor loss_cpu = cross_entropy(logits_cpu.reshape({-1, config.vocab}), targets.reshape({-1}));
  const Tensor loss_gpu =
      cross_entropy(logits_gpu.reshape({-1, config.vocab}), targets.reshape({-1}).to(Device::cuda(0)));
  EXPECT_LT(relative_error(loss_gpu.to(DType::f32), loss_cpu), tol) << "loss";
  loss_cpu.backward();
  loss_gpu.backward();
  const NamedTensors p_cpu = cpu->named_parameters(), p_gpu = gpu->named_parameters();
  ASSERT_EQ(p_cpu.size(), p_gpu.size());
  for (size_t i = 0; i < p_cpu.size(); ++i) {
    ASSERT_TRUE(p_gpu[i].second.grad().defined()) << p_gpu[i].first;
    EXPECT_LT(relative_error(p_gpu[i].second.grad().to(DType::f32), p_cpu[i].second.grad()), tol)
        << p_cpu[i].first;
  }
}

// Whole models accumulate the error of many ops: the f32 bound is 1e-4 (cuBLAS and OpenBLAS sum in
// different orders), the bf16 bound 5e-2 (every activation is rounded to 8 bits of mantissa).
TEST(CudaModel, Gpt2ForwardBackwardMatchesCpuInF32) {
  TSU_REQUIRE_GPU();
  expect_model_matches_cpu(Arch::gpt2, DType::f32, 1e-4);
}
TEST(CudaModel, LlamaForwardBackwardMatchesCpuInF32) {
  TSU_REQUIRE_GPU();
  expect_model_matches_cpu(Arch::llama, DType::f32, 1e-4);
}
TEST(CudaModel, Gpt2ForwardBackwardMatchesCpuInBf16) {
  TSU_REQUIRE_GPU();
  expect_model_matches_cpu(Arch::gpt2, DType::bf16, 5e-2);
}
TEST(CudaModel, LlamaForwardBackwardMatchesCpuInBf16) {
  TSU_REQUIRE_GPU();
  expect_model_matches_cpu(Arch::llama, DType::bf16, 5e-2);
}

// Trains a tiny model for `steps` AdamW steps on fixed batches; returns the loss of each step.
std::vector<double> loss_curve(Arch arch, Device device, DType dtype, int steps) {
  const ModelConfig config = tiny_config(arch);
  auto model = build(config, device, dtype);
  AdamW optimizer(model->named_parameters(), {.lr = 3e-3, .weight_decay = 0.1});
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    const Tensor ids = batch_ids(4, 25, config.vocab, 100 + step % 4).to(device);
    const Tensor logits = model->forward(ids.slice(1, 0, 24));
    const Tensor loss = cross_entropy(logits.reshape({-1, config.vocab}), ids.slice(1, 1, 25).reshape({-1}));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    losses.push_back(loss.to(DType::f64).item<double>());
  }
  return losses;
}

TEST(CudaModel, TinyModelTrainsToTheCpuLossCurve) {
  TSU_REQUIRE_GPU();
  for (Arch arch : {Arch::gpt2, Arch::llama}) {
    const std::vector<double> cpu = loss_curve(arch, Device::cpu(), DType::f32, 40);
    const std::vector<double> f32 = loss_curve(arch, Device::cuda(0), DType::f32, 40);
    const std::vector<double> bf16 = loss_curve(arch, Device::cuda(0), DType::bf16, 40);
    EXPECT_LT(cpu.back(), cpu.front() - 1.0) << "the reference run itself must learn";
    for (size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_NEAR(f32[i], cpu[i], 1e-3 * cpu[i]) << "f32 step " << i;
      EXPECT_NEAR(bf16[i], cpu[i], 3e-2 * cpu[i]) << "bf16 step " << i;
    }
  }
}

TEST(CudaModel, SameRunTwiceGivesIdenticalWeights) {
  TSU_REQUIRE_GPU();
  std::vector<std::vector<float>> weights;
  for (int run = 0; run < 2; ++run) {
    const ModelConfig config = tiny_config(Arch::llama);
    auto model = build(config, Device::cuda(0), DType::bf16);
    AdamW optimizer(model->named_parameters(), {.lr = 3e-3});
    for (int step = 0; step < 5; ++step) {
      const Tensor ids = batch_ids(4, 25, config.vocab, 100 + step).to(Device::cuda(0));
      const Tensor loss = cross_entropy(model->forward(ids.slice(1, 0, 24)).reshape({-1, config.vocab}),
                                        ids.slice(1, 1, 25).reshape({-1}));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
    }
    std::vector<float> all;
    for (const Tensor& p : model->parameters()) {
      const std::vector<float> v = p.to(Device::cpu()).to_vector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    weights.push_back(all);
  }
  EXPECT_EQ(weights[0], weights[1]);
}

TEST(CudaModel, GenerationWithKvCacheMatchesFullForward) {
  TSU_REQUIRE_GPU();
  const ModelConfig config = tiny_config(Arch::llama);
  auto model = build(config, Device::cuda(0), DType::f32);
  model->eval();
  NoGradGuard no_grad;
  const Tensor ids = batch_ids(1, 12, config.vocab, 3).to(Device::cuda(0));
  const Tensor full = model->forward(ids);
  KVCache cache;
  model->forward(ids.slice(1, 0, 8), &cache);
  const Tensor tail = model->forward(ids.slice(1, 8, 12), &cache);
  EXPECT_LT(relative_error(tail, full.slice(1, 8, 12)), 1e-5);
}

}  // namespace
}  // namespace tsumugi

// Modules and the GPT-2 / Llama models: names, shapes, gradients, caching, initialisation.
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>

#include <algorithm>

#include "support/gradcheck.h"

using namespace tsumugi;
using tsumugi::testing::gradcheck_params;

namespace {

ModelConfig tiny(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = arch == Arch::llama ? 2 : 0;
  c.dim = 16;
  c.vocab = 13;
  c.context = 16;
  c.ffn_dim = arch == Arch::llama ? 24 : 0;
  return c;
}

std::vector<std::string> names_of(const Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, _] : m.named_parameters()) names.push_back(name);
  return names;
}

Tensor ids_for(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  return randint(0, vocab, {batch, length}, gen);
}

}  // namespace

TEST(Module, Gpt2ParameterNamesAndLayoutsFollowHuggingFace) {
  auto model = make_model(tiny(Arch::gpt2));
  const auto names = names_of(*model);
  const std::vector<std::string> first{
      "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
      "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight",
      "transformer.h.0.attn.c_proj.bias", "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
      "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_proj.weight",
      "transformer.h.0.mlp.c_proj.bias"};
  EXPECT_TRUE(std::equal(first.begin(), first.end(), names.begin()));
  EXPECT_EQ(names.back(), "transformer.ln_f.bias");
  EXPECT_EQ(std::count(names.begin(), names.end(), "lm_head.weight"), 0);  // tied
  const StateDict state = model->state_dict();
  EXPECT_EQ(state.at("transformer.h.1.attn.c_attn.weight").shape(), (Shape{16, 48}));  // Conv1D: (in, out)
  EXPECT_EQ(state.at("transformer.h.1.mlp.c_fc.weight").shape(), (Shape{16, 64}));
  EXPECT_EQ(state.at("transformer.wpe.weight").shape(), (Shape{16, 16}));
}

TEST(Module, LlamaParameterNamesAndLayoutsFollowHuggingFace) {
  ModelConfig c = tiny(Arch::llama);
  c.tied_embeddings = false;
  auto model = make_model(c);
  const StateDict state = model->state_dict();
  EXPECT_EQ(state.at("model.embed_tokens.weight").shape(), (Shape{13, 16}));
  EXPECT_EQ(state.at("model.layers.0.self_attn.q_proj.weight").shape(), (Shape{16, 16}));  // (out, in)
  EXPECT_EQ(state.at("model.layers.0.self_attn.k_proj.weight").shape(), (Shape{8, 16}));   // 2 kv heads of 4
  EXPECT_EQ(state.at("model.layers.1.mlp.gate_proj.weight").shape(), (Shape{24, 16}));
  EXPECT_EQ(state.at("model.layers.1.mlp.down_proj.weight").shape(), (Shape{16, 24}));
  EXPECT_EQ(state.at("model.layers.1.post_attention_layernorm.weight").shape(), (Shape{16}));
  EXPECT_EQ(state.at("model.norm.weight").shape(), (Shape{16}));
  EXPECT_EQ(state.at("lm_head.weight").shape(), (Shape{13, 16}));
  EXPECT_EQ(state.size(), 2 * 9 + 3u);
}

TEST(Module, LoadStateDictChecksNamesAndShapes) {
  auto a = make_model(tiny(Arch::llama));
  auto b = make_model(tiny(Arch::llama));
  a->init_weights(1);
  b->load_state_dict(a->state_dict());
  EXPECT_EQ(b->state_dict().at("model.layers.1.self_attn.o_proj.weight").to_vector<float>(),
            a->state_dict().at("model.layers.1.self_attn.o_proj.weight").to_vector<float>());
  StateDict missing = a->state_dict();
  missing.erase("model.norm.weight");
  try {
    b->load_state_dict(missing);
    FAIL() << "missing key accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("missing: model.norm.weight"), std::string::npos) << e.what();
  }
  b->load_state_dict(missing, /*strict=*/false);
  StateDict wrong = a->state_dict();
  wrong["model.norm.weight"] = zeros({3});
  EXPECT_THROW(b->load_state_dict(wrong), ValueError);
  StateDict extra = a->state_dict();
  extra["model.extra"] = zeros({1});
  EXPECT_THROW(b->load_state_dict(extra), ValueError);
  // A tied model accepts the redundant head that some exporters write.
  StateDict with_head = a->state_dict();
  with_head["lm_head.weight"] = with_head.at("model.embed_tokens.weight");
  b->load_state_dict(with_head);
}

// What a pipeline stage does with the layers it does not run: their memory goes back.
TEST(Module, ReleasedParametersHoldNothingAndTheOthersAreUntouched) {
  auto model = make_model(tiny(Arch::llama));
  model->init_weights(1);
  const std::vector<float> kept = model->state_dict().at("model.layers.1.mlp.up_proj.weight").to_vector<float>();
  const int64_t total = model->num_parameters();
  const int64_t released = 24 * 16 + 13 * 16;
  const std::string name = "model.layers.0.self_attn.q_proj.weight";  // (16, 16)
  Tensor parameter;  // the module's own handle
  for (const auto& [n, p] : model->named_parameters())
    if (n == name) parameter = p;
  const int64_t before = memory_stats().allocated;
  model->release_parameters({"model.layers.0.mlp.up_proj.weight", "model.embed_tokens.weight", name});
  const int64_t freed = before - memory_stats().allocated;
  EXPECT_GE(freed, (released + 16 * 16) * 4);
  EXPECT_EQ(parameter.numel(), 0);  // the module's handles see the release
  const StateDict after = model->state_dict();
  EXPECT_EQ(after.at("model.layers.0.mlp.up_proj.weight").shape(), (Shape{0}));
  EXPECT_EQ(after.at("model.embed_tokens.weight").numel(), 0);
  EXPECT_EQ(after.at("model.layers.0.mlp.up_proj.weight").dtype(), DType::f32);
  EXPECT_EQ(after.at("model.layers.1.mlp.up_proj.weight").to_vector<float>(), kept);
  EXPECT_EQ(model->num_parameters(), total - released - 16 * 16);
  EXPECT_THROW(model->release_parameters({"model.layers.9.mlp.up_proj.weight"}), ValueError);
}

TEST(Module, InitialisationIsSeededPerParameter) {
  auto a = make_model(tiny(Arch::gpt2));
  auto b = make_model(tiny(Arch::gpt2));
  a->init_weights(3);
  b->init_weights(3);
  for (const auto& [name, t] : a->state_dict()) EXPECT_EQ(t.to_vector<float>(), b->state_dict().at(name).to_vector<float>()) << name;
  const StateDict s = a->state_dict();
  EXPECT_EQ(s.at("transformer.h.0.ln_1.weight").to_vector<float>(), std::vector<float>(16, 1.0f));
  EXPECT_EQ(s.at("transformer.h.0.attn.c_attn.bias").to_vector<float>(), std::vector<float>(48, 0.0f));
  // Residual projections have std 0.02 / sqrt(2 * layers); others 0.02.
  auto stddev = [](const Tensor& t) {
    const auto v = t.to_vector<double>();
    double ss = 0;
    for (double x : v) ss += x * x;
    return std::sqrt(ss / static_cast<double>(v.size()));
  };
  ModelConfig big = tiny(Arch::gpt2);
  big.dim = 256;
  big.heads = 4;
  auto m = make_model(big);
  m->init_weights(5);
  EXPECT_NEAR(stddev(m->state_dict().at("transformer.h.0.attn.c_attn.weight")), 0.02, 0.001);
  EXPECT_NEAR(stddev(m->state_dict().at("transformer.h.0.mlp.c_proj.weight")), 0.01, 0.0005);
}

TEST(Module, FlopCountFollowsSixNPlusAttention) {
  ModelConfig c = tiny(Arch::gpt2);
  auto model = make_model(c);
  // Per layer: c_attn 16x48 + c_proj 16x16 + c_fc 16x64 + c_proj 64x16; plus the tied head 13x16.
  const int64_t n = 2 * (16 * 48 + 16 * 16 + 16 * 64 + 64 * 16) + 13 * 16;
  EXPECT_EQ(model->num_matmul_parameters(), n);
  EXPECT_DOUBLE_EQ(model->flops_per_token(8), 6.0 * n + 12.0 * 2 * 8 * 16);
}

TEST(Module, ConfigErrorsNameTheProblem) {
  ModelConfig c = tiny(Arch::gpt2);
  c.heads = 3;
  EXPECT_THROW(make_model(c), ValueError);
  c = tiny(Arch::gpt2);
  c.kv_heads = 2;
  EXPECT_THROW(make_model(c), ValueError);
  c = tiny(Arch::llama);
  c.kv_heads = 3;
  EXPECT_THROW(make_model(c), ValueError);
  auto model = make_model(tiny(Arch::gpt2));
  EXPECT_THROW(model->forward(ids_for(1, 17, 13, 1)), ValueError);  // beyond the context
}

TEST(Module, ConfigCountsParametersWithoutBuildingTheModel) {
  for (const Arch arch : {Arch::gpt2, Arch::llama}) {
    for (const bool tied : {true, false}) {
      ModelConfig c = tiny(arch);
      c.tied_embeddings = tied;
      EXPECT_EQ(c.num_parameters(), make_model(c)->num_parameters()) << arch_name(arch) << " tied " << tied;
    }
  }
  ModelConfig llama = tiny(Arch::llama);
  llama.ffn_dim = 0;  // the default width rule
  EXPECT_EQ(llama.num_parameters(), make_model(llama)->num_parameters());
  // A recipe from a file may ask for anything: sizes are bounded before they multiply.
  ModelConfig huge = tiny(Arch::gpt2);
  huge.dim = int64_t{1} << 40;
  EXPECT_THROW(huge.num_parameters(), ValueError);
  huge = tiny(Arch::gpt2);
  huge.layers = int64_t{1} << 19;
  huge.dim = huge.heads = 1 << 20;
  EXPECT_GT(huge.num_parameters(), int64_t{1} << 62);  // counted, not allocated
}

class ModelGradient : public ::testing::TestWithParam<Arch> {};

TEST_P(ModelGradient, WholeModelPassesFloat64GradientCheck) {
  ModelConfig c = tiny(GetParam());
  c.dim = 8;
  c.heads = 2;
  c.kv_heads = GetParam() == Arch::llama ? 1 : 0;
  c.ffn_dim = 12;
  c.vocab = 7;
  c.tied_embeddings = GetParam() == Arch::gpt2;
  auto model = make_model(c);
  model->init_weights(11);
  model->to(DType::f64);
  {
    // Larger weights than the 0.02 init make every path of the gradient visible.
    NoGradGuard no_grad;
    Generator gen(3);
    for (auto& [name, p] : model->named_parameters()) p.copy_(p + randn(p.shape(), gen, {.dtype = DType::f64}, 0.0, 0.3));
  }
  const Tensor ids = ids_for(2, 5, 7, 4);
  const Tensor targets = ids_for(2, 5, 7, 5).view({-1});
  auto loss = [&] { return cross_entropy(model->forward(ids).view({-1, 7}), targets); };
  EXPECT_TRUE(gradcheck_params(loss, model->named_parameters()));
}

INSTANTIATE_TEST_SUITE_P(Arches, ModelGradient, ::testing::Values(Arch::gpt2, Arch::llama),
                         [](const auto& info) { return std::string(arch_name(info.param)); });

class ModelCache : public ::testing::TestWithParam<Arch> {};

TEST_P(ModelCache, IncrementalDecodingMatchesFullForward) {
  auto model = make_model(tiny(GetParam()));
  model->init_weights(2);
  model->eval();
  NoGradGuard no_grad;
  const Tensor ids = ids_for(2, 9, 13, 6);
  const Tensor full = model->forward(ids);
  KVCache cache;
  const Tensor first = model->forward(ids.narrow(1, 0, 4), &cache);
  std::vector<Tensor> pieces{first};
  for (int64_t t = 4; t < 9; ++t) pieces.push_back(model->forward(ids.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.length, 9);
  const auto want = full.to_vector<float>(), got = cat(pieces, 1).to_vector<float>();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5f) << i;
}

INSTANTIATE_TEST_SUITE_P(Arches, ModelCache, ::testing::Values(Arch::gpt2, Arch::llama),
                         [](const auto& info) { return std::string(arch_name(info.param)); });

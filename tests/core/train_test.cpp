// End to end on the CPU: optimizers, and tiny models that memorise one batch.
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>

#include <cmath>

#include <omp.h>

using namespace tsumugi;

TEST(AdamW, MatchesHandComputedUpdates) {
  Tensor w = from_data<float>({1.0f, -2.0f}, {1, 2}).set_requires_grad();  // 2-D: decayed
  Tensor b = from_data<float>({0.5f}).set_requires_grad();                 // 1-D: not decayed
  AdamW opt({{"w", w}, {"b", b}}, {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.5});
  double wv[2] = {1.0, -2.0}, bv = 0.5, m[3] = {}, v[3] = {};
  for (int step = 1; step <= 3; ++step) {
    w.set_grad(from_data<float>({0.3f * step, -0.1f}, {1, 2}));
    b.set_grad(from_data<float>({0.2f}));
    opt.step();
    const double g[3] = {0.3 * step, -0.1, 0.2};
    double* p[3] = {&wv[0], &wv[1], &bv};
    for (int i = 0; i < 3; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(0.9, step)), vhat = v[i] / (1 - std::pow(0.99, step));
      if (i < 2) *p[i] *= 1 - 0.1 * 0.5;
      *p[i] -= 0.1 * mhat / (std::sqrt(vhat) + 1e-8);
    }
  }
  const auto got = w.to_vector<float>();
  EXPECT_NEAR(got[0], wv[0], 1e-6);
  EXPECT_NEAR(got[1], wv[1], 1e-6);
  EXPECT_NEAR(b.item<float>(), bv, 1e-6);
  EXPECT_EQ(opt.steps(), 3);
}

TEST(AdamW, StateRoundTripsThroughStateDict) {
  Tensor w = ones({3, 2}).set_requires_grad();
  AdamW a({{"w", w}}, {});
  w.set_grad(full({3, 2}, 0.5));
  a.step();
  AdamW b({{"w", w}}, {});
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.steps(), 1);
  EXPECT_EQ(b.state_dict().at("exp_avg_sq.w").to_vector<float>(), a.state_dict().at("exp_avg_sq.w").to_vector<float>());
  EXPECT_THROW(b.load_state_dict({{"step", from_data<int64_t>({1}, {1})}}), ValueError);
}

TEST(SGD, MomentumAndDecay) {
  Tensor w = from_data<float>({1.0f}).set_requires_grad();
  SGD opt({{"w", w}}, 0.1, 0.9, 0.0);
  w.set_grad(from_data<float>({1.0f}));
  opt.step();  // v = 1, w = 0.9
  opt.step();  // v = 1.9, w = 0.71
  EXPECT_NEAR(w.item<float>(), 0.71f, 1e-6);
}

TEST(ClipGradNorm, ScalesToMaxNormAndReportsTheNormBefore) {
  Tensor a = zeros({2}).set_requires_grad(), b = zeros({1}).set_requires_grad();
  a.set_grad(from_data<float>({3.0f, 0.0f}));
  b.set_grad(from_data<float>({4.0f}));
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-5);
  EXPECT_NEAR(a.grad().to_vector<float>()[0], 0.6f, 1e-5);
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0), 1.0, 1e-5);  // below max: unchanged
  EXPECT_NEAR(grad_norm({a, b}), 1.0, 1e-5);
}

class Memorise : public ::testing::TestWithParam<Arch> {};

// A tiny model drives the loss on one fixed batch of 8 x 64 tokens below 0.1 within 300 steps.
TEST_P(Memorise, OneBatchWithin300Steps) {
  ModelConfig c;
  c.arch = GetParam();
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = GetParam() == Arch::llama ? 2 : 0;
  c.dim = 64;
  c.vocab = 256;
  c.context = 64;
  auto model = make_model(c);
  model->init_weights(0);
  AdamW opt(model->named_parameters(), {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.0});
  Generator gen(42);
  const Tensor tokens = randint(0, c.vocab, {8, 65}, gen);
  const Tensor inputs = tokens.narrow(1, 0, 64).contiguous();
  const Tensor targets = tokens.narrow(1, 1, 64).contiguous().view({-1});
  double loss_value = 0;
  int step = 0;
  for (; step < 300; ++step) {
    Tensor loss = cross_entropy(model->forward(inputs).view({-1, c.vocab}), targets);
    loss_value = loss.item<double>();
    if (step == 0) {
      EXPECT_NEAR(loss_value, std::log(256.0), 0.3);  // near uniform at init
    }
    if (loss_value < 0.1) break;
    loss.backward();
    clip_grad_norm(model->parameters(), 1.0);
    opt.step();
    opt.zero_grad();
  }
  EXPECT_LT(loss_value, 0.1) << "after " << step << " steps";
  RecordProperty("steps", step);
}

INSTANTIATE_TEST_SUITE_P(Arches, Memorise, ::testing::Values(Arch::gpt2, Arch::llama),
                         [](const auto& info) { return std::string(arch_name(info.param)); });

TEST(Determinism, SameSeedSameWeightsWhateverTheThreadCount) {
  auto train = [](int threads) {
    set_num_threads(threads);
    set_blas_threads(1);
    ModelConfig c;
    c.arch = Arch::llama;
    c.layers = 2;
    c.heads = 2;
    c.dim = 32;
    c.vocab = 50;
    c.context = 96;
    auto model = make_model(c);
    model->init_weights(9);
    AdamW opt(model->named_parameters(), {.lr = 1e-3});
    Generator gen(1);
    const Tensor tokens = randint(0, c.vocab, {3, 97}, gen);
    for (int step = 0; step < 3; ++step) {
      Tensor loss = cross_entropy(model->forward(tokens.narrow(1, 0, 96)).view({-1, c.vocab}),
                                  tokens.narrow(1, 1, 96).contiguous().view({-1}));
      loss.backward();
      clip_grad_norm(model->parameters(), 1.0);
      opt.step();
      opt.zero_grad();
    }
    return model->state_dict();
  };
  // BLAS may sum in a thread-dependent order (DESIGN.md); pin it to one thread for both runs so
  // that only tsumugi's own kernels vary their thread count.
  const int all = omp_get_num_procs();
  const StateDict one = train(1);
  set_num_threads(all);
  const StateDict many = train(all);
  for (const auto& [name, t] : one) EXPECT_EQ(t.to_vector<float>(), many.at(name).to_vector<float>()) << name;
}

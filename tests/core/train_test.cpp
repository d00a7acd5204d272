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

// grad_norm is the square root of grad_square_pieces added in order: per parameter the sums of
// squares of blocks of 4096 elements, empty where there is no gradient.
TEST(GradSquarePieces, AreTheBlocksGradNormAdds) {
  ASSERT_EQ(grad_square_piece_size(Device::cpu()), 4096);
  Tensor a = zeros({4096 * 2 + 5}).set_requires_grad(), none = zeros({3}).set_requires_grad();
  Tensor b = zeros({2, 3}).set_requires_grad();
  a.set_grad(full({4096 * 2 + 5}, 0.5f));
  b.set_grad(from_data<float>({1, 2, 3, 4, 5, 6}, {2, 3}));
  const std::vector<std::vector<double>> pieces = grad_square_pieces({a, none, b});
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], (std::vector<double>{1024.0, 1024.0, 1.25}));
  EXPECT_TRUE(pieces[1].empty());
  EXPECT_EQ(pieces[2], std::vector<double>{91.0});
  EXPECT_EQ(pieces[2], grad_square_blocks(b.grad()));
  EXPECT_EQ(grad_norm({a, none, b}), std::sqrt(1024.0 + 1024.0 + 1.25 + 91.0));
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

// ---- mixed precision, gradient scaling and dynamic loss scaling (CPU) ----

TEST(AdamW, GradScaleMultipliesTheGradientWithoutTouchingIt) {
  Tensor a = from_data<float>({1.0f, -2.0f, 3.0f}, {3, 1}).set_requires_grad();
  Tensor b = a.detach().clone().set_requires_grad();
  AdamW scaled({{"w", a}}, {.lr = 0.1});
  AdamW plain({{"w", b}}, {.lr = 0.1});
  const Tensor g = from_data<float>({0.5f, -4.0f, 8.0f}, {3, 1});
  for (int step = 0; step < 3; ++step) {
    a.set_grad(g);
    b.set_grad(g * 0.25);
    scaled.step(0.25);
    plain.step();
  }
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(a.grad().to_vector<float>(), g.to_vector<float>());  // .grad is left as it was
}

// A bf16 parameter is updated through fp32 master weights: they follow an f32 run exactly, and the
// parameter holds them rounded.
TEST(AdamW, Bf16ParametersFollowFp32MasterWeights) {
  Tensor f32 = from_data<float>({0.1f, -0.2f, 0.3f, 1.0f, 2.0f, -3.0f}, {2, 3}).set_requires_grad();
  Tensor half = f32.detach().to(DType::bf16).set_requires_grad();
  Tensor reference = half.detach().to(DType::f32).set_requires_grad();  // the same start, in f32
  AdamW master_run({{"w", half}}, {.lr = 1e-3, .weight_decay = 0.1});
  AdamW f32_run({{"w", reference}}, {.lr = 1e-3, .weight_decay = 0.1});
  EXPECT_EQ(master_run.master_weight(0).dtype(), DType::f32);
  for (int step = 1; step <= 4; ++step) {
    const Tensor g = from_data<float>({0.01f * step, -0.5f, 0.25f, 1.5f, -0.125f, 0.0625f}, {2, 3});
    half.set_grad(g.to(DType::bf16));
    reference.set_grad(g.to(DType::bf16).to(DType::f32));
    master_run.step();
    f32_run.step();
  }
  const Tensor master = master_run.master_weight(0);
  EXPECT_EQ(master.dtype(), DType::f32);
  EXPECT_EQ(master.to_vector<float>(), reference.to_vector<float>());
  EXPECT_EQ(half.to_vector<float>(), master.to(DType::bf16).to_vector<float>());
  EXPECT_EQ(master_run.master_weights().at("w").to_vector<float>(), master.to_vector<float>());
  EXPECT_TRUE(f32_run.master_weight(0).shares_storage(reference));  // f32: the parameter itself
}

TEST(AdamW, MasterWeightsRoundTripThroughStateDictAndResumeExactly) {
  auto grad = [](int step) { return from_data<float>({0.3f * step, -0.7f, 0.11f, 2.0f}, {2, 2}).to(DType::bf16); };
  Tensor w = from_data<float>({0.5f, -1.5f, 0.25f, 3.0f}, {2, 2}).to(DType::bf16).set_requires_grad();
  AdamW a({{"w", w}}, {.lr = 1e-2});
  for (int step = 1; step <= 3; ++step) {
    w.set_grad(grad(step));
    a.step();
  }
  StateDict saved;
  for (const auto& [name, t] : a.state_dict()) saved.emplace(name, t.clone());
  ASSERT_TRUE(saved.count("master.w"));
  EXPECT_EQ(saved.at("master.w").dtype(), DType::f32);
  Tensor resumed = zeros({2, 2}, {.dtype = DType::bf16}).set_requires_grad();  // weights come from the state
  AdamW b({{"resumed", resumed}}, {.lr = 1e-2});
  StateDict renamed;
  for (const auto& [name, t] : saved)  // "exp_avg.w" -> "exp_avg.resumed"
    renamed.emplace(name == "step" ? name : name.substr(0, name.rfind('.')) + ".resumed", t);
  b.load_state_dict(renamed);
  EXPECT_EQ(resumed.to_vector<float>(), w.to_vector<float>());
  for (int step = 4; step <= 5; ++step) {
    w.set_grad(grad(step));
    resumed.set_grad(grad(step));
    a.step();
    b.step();
  }
  EXPECT_EQ(resumed.to_vector<float>(), w.to_vector<float>());
  EXPECT_EQ(b.master_weight(0).to_vector<float>(), a.master_weight(0).to_vector<float>());
}

TEST(AdamW, LoadMasterWeightsKeepsTheFp32PrecisionOfBf16Parameters) {
  const Tensor fp32 = from_data<float>({0.1f, 1.0f + 1.0f / 1024, -3.3f});
  Tensor w = zeros({3}, {.dtype = DType::bf16}).set_requires_grad();
  AdamW opt({{"w", w}}, {});
  opt.load_master_weights({{"w", fp32}, {"unknown", fp32}});
  EXPECT_EQ(opt.master_weight(0).to_vector<float>(), fp32.to_vector<float>());
  EXPECT_EQ(w.to_vector<float>(), fp32.to(DType::bf16).to_vector<float>());
  EXPECT_NE(w.to_vector<float>(), fp32.to_vector<float>());  // the values need more than bf16
  EXPECT_THROW(opt.load_master_weights({{"w", zeros({4})}}), ValueError);
}

TEST(AdamW, RejectsParametersOfOtherDtypes) {
  Tensor d = zeros({2}, {.dtype = DType::f64}).set_requires_grad();
  EXPECT_THROW(AdamW({{"d", d}}, {}), ValueError);
}

TEST(GradsFinite, DetectsNanAndInfAndSkipsParametersWithoutGradients) {
  Tensor a = zeros({3}).set_requires_grad(), b = zeros({2, 2}).set_requires_grad(), c = zeros({1}).set_requires_grad();
  a.set_grad(from_data<float>({1.0f, -2.0f, 3.0f}));
  b.set_grad(from_data<float>({0.0f, 1e30f, -1e30f, 5.0f}, {2, 2}));
  EXPECT_TRUE(grads_finite({a, b, c}));
  b.set_grad(from_data<float>({0.0f, NAN, 0.0f, 0.0f}, {2, 2}));
  EXPECT_FALSE(grads_finite({a, b, c}));
  b.set_grad(from_data<float>({0.0f, 0.0f, 0.0f, -INFINITY}, {2, 2}).to(DType::bf16));
  EXPECT_FALSE(grads_finite({a, b, c}));
  b.set_grad(from_data<double>({1e300, 0.0, 0.0, 0.0}, {2, 2}));  // finite in f64
  EXPECT_TRUE(grads_finite({a, b, c}));
}

TEST(DynamicLossScaler, StartsAt2To16AndGrowsAfter2000FiniteSteps) {
  DynamicLossScaler scaler;
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_EQ(scaler.inv_scale(), 1.0 / 65536.0);
  for (int step = 1; step < 2000; ++step) ASSERT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_EQ(scaler.good_steps(), 1999);
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 131072.0);
  EXPECT_EQ(scaler.good_steps(), 0);
}

TEST(DynamicLossScaler, BacksOffOnOverflowSkipsTheStepAndRestartsTheCount) {
  DynamicLossScaler scaler({.init_scale = 1024.0, .growth_interval = 3});
  EXPECT_TRUE(scaler.update(true));
  EXPECT_TRUE(scaler.update(true));
  EXPECT_FALSE(scaler.update(false));  // overflow: skip, halve
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_EQ(scaler.good_steps(), 0);
  EXPECT_FALSE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 256.0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 512.0);  // three finite steps in a row since the overflow
}

TEST(DynamicLossScaler, StateRoundTripsAndBadOptionsAreErrors) {
  DynamicLossScaler a({.init_scale = 8.0, .growth_interval = 5});
  a.update(false);
  a.update(true);
  a.update(true);
  DynamicLossScaler b({.init_scale = 8.0, .growth_interval = 5});
  b.load_state_dict(a.state_dict());
  EXPECT_EQ(b.scale(), 4.0);
  EXPECT_EQ(b.good_steps(), 2);
  EXPECT_THROW(b.load_state_dict({}), ValueError);
  EXPECT_THROW(DynamicLossScaler({.init_scale = 0.0}), ValueError);
  EXPECT_THROW(DynamicLossScaler({.backoff_factor = 1.0}), ValueError);
  EXPECT_THROW(DynamicLossScaler({.growth_interval = 0}), ValueError);
}

// The trainer's fp16 loop: an overflowing step leaves the weights alone and halves the scale;
// a finite one updates them with the gradients unscaled.
TEST(DynamicLossScaler, DrivesAdamWThroughOverflowAndRecovery) {
  Tensor w = from_data<float>({1.0f, 2.0f}).set_requires_grad();
  Tensor reference = w.detach().clone().set_requires_grad();
  AdamW opt({{"w", w}}, {.lr = 0.1});
  AdamW ref_opt({{"w", reference}}, {.lr = 0.1});
  DynamicLossScaler scaler({.init_scale = 4.0});
  w.set_grad(from_data<float>({INFINITY, 1.0f}));
  const bool finite = grads_finite({w});
  if (finite) opt.step(scaler.inv_scale());
  EXPECT_FALSE(scaler.update(finite));
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(scaler.scale(), 2.0);
  w.set_grad(from_data<float>({0.5f, -1.0f}) * scaler.scale());  // backward from loss * scale
  reference.set_grad(from_data<float>({0.5f, -1.0f}));
  ASSERT_TRUE(grads_finite({w}));
  opt.step(scaler.inv_scale());
  ref_opt.step();
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(w.to_vector<float>(), reference.to_vector<float>());
}

// ZeRO-1 over real MPI ranks (np 1, 2, 4): the sharded optimizer against the replicated AdamW, in
// f32, bf16 and f16 (fp32 master weights sharded with the moments), with reduced gradients (the
// deterministic mode: identical bits) and with each rank's own gradients (the default mode).
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/dist/zero.h>

#include <cmath>

#include "mpi_main.h"

using namespace tsumugi;

namespace {

std::shared_ptr<ProcessGroup> world() {
  static auto group = default_group();
  return group;
}

// Odd sizes, 2-D ones decayed; 9,609 elements in all, so that shards of 2 and 4 ranks begin and
// end inside parameters.
const std::vector<Shape> kShapes = {{7}, {40, 25}, {4099}, {9, 500}, {3}};
const AdamWOptions kOptions{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};

Tensor uniform(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  return rand(shape, gen, {}, -scale, scale);
}

// The fp32 starting weights (the same on every rank).
StateDict start_weights() {
  StateDict w;
  for (size_t i = 0; i < kShapes.size(); ++i) w.emplace("p" + std::to_string(i), uniform(kShapes[i], 10 + i));
  return w;
}

// The parameters: the starting weights in `dtype`, in registration order.
NamedTensors make_params(DType dtype) {
  const StateDict w = start_weights();
  NamedTensors params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    const std::string name = "p" + std::to_string(i);
    Tensor p = w.at(name).to(dtype).contiguous();
    p.set_requires_grad(true);
    params.emplace_back(name, p);
  }
  return params;
}

// The gradient of parameter i at `step` from `rank`, in `dtype`.
Tensor gradient(size_t i, int step, int rank, DType dtype) {
  return uniform(kShapes[i], 1000 * step + 100 * rank + i, 0.5).to(dtype);
}

std::vector<float> floats(const Tensor& t) { return t.to(DType::f32).contiguous().to_vector<float>(); }

void expect_same_bits(const StateDict& got, const StateDict& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << what << ": no " << name;
    if (t.dtype() == DType::i64) {
      EXPECT_EQ(got.at(name).to_vector<int64_t>(), t.to_vector<int64_t>()) << what << ": " << name;
    } else {
      EXPECT_EQ(got.at(name).shape(), t.shape()) << what << ": " << name;
      EXPECT_EQ(floats(got.at(name)), floats(t)) << what << ": " << name;
    }
  }
}

void expect_same_params(const NamedTensors& got, const NamedTensors& want, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].second.dtype(), want[i].second.dtype());
    EXPECT_EQ(floats(got[i].second), floats(want[i].second)) << what << ": " << want[i].first;
  }
}

// One step as the trainer takes it with loss scale `scale` (1 when none) and clipping at 1.0:
// the replicated AdamW from `grads`, ZeRO-1 from the same global gradient already reduced.
void replicated_and_sharded_step(AdamW& adamw, const NamedTensors& ref, ZeroAdamW& zero, const NamedTensors& params,
                                 int step, DType dtype, double scale) {
  for (size_t i = 0; i < ref.size(); ++i) {
    const Tensor g = gradient(i, step, 0, dtype);
    ref[i].second.set_grad(g);
    params[i].second.set_grad(g.clone());
  }
  std::vector<Tensor> ref_params;
  for (const auto& [name, p] : ref) ref_params.push_back(p);
  const double norm = grad_norm(ref_params) / scale;
  const double clip = clip_coefficient(norm, 1.0);
  const double zero_norm = zero.reduce_gradients(1.0 / scale);
  EXPECT_EQ(zero_norm, norm) << "step " << step;
  adamw.step(clip / scale);
  zero.update(clip);
  adamw.zero_grad();
  zero.zero_grad();
}

}  // namespace

TEST(Zero, ShardsCoverTheParametersOnceInRankOrder) {
  const NamedTensors params = make_params(DType::f32);
  ZeroAdamW zero(params, kOptions, world(), true);
  Tensor bounds = empty({2 * world()->size()}, {.dtype = DType::i64});
  world()->all_gather(from_data<int64_t>({zero.shard().first, zero.shard().second}), bounds);
  const std::vector<int64_t> b = bounds.to_vector<int64_t>();
  EXPECT_EQ(b.front(), 0);
  for (int r = 1; r < world()->size(); ++r) EXPECT_EQ(b[2 * r], b[2 * r - 1]) << "rank " << r;
  EXPECT_EQ(b.back(), 9609);
}

// Deterministic mode: every rank holds the global gradient, and ZeRO-1 must give the replicated
// optimizer's bits: weights, master weights and state, with clipping and an fp16 loss scale.
TEST(Zero, ReducedGradientsGiveTheReplicatedOptimizersBitsInEveryPrecision) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const NamedTensors ref = make_params(dtype), params = make_params(dtype);
    AdamW adamw(ref, kOptions);
    ZeroAdamW zero(params, kOptions, world(), true);
    adamw.load_master_weights(start_weights());
    zero.load_master_weights(start_weights());
    expect_same_bits(zero.state_dict(), adamw.state_dict(), "before the first step");
    const double scale = dtype == DType::f16 ? 1024.0 : 1.0;
    for (int step = 1; step <= 4; ++step) replicated_and_sharded_step(adamw, ref, zero, params, step, dtype, scale);
    EXPECT_EQ(zero.steps(), 4);
    expect_same_params(params, ref, "parameters");
    expect_same_bits(zero.master_weights(), adamw.master_weights(), "master weights");
    expect_same_bits(zero.state_dict(), adamw.state_dict(), "optimizer state");
  }
}

// A ZeRO-1 state loads into the replicated optimizer and back, and both go on with the same bits.
TEST(Zero, StateMovesBetweenShardedAndReplicatedOptimizers) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const NamedTensors ref = make_params(dtype), params = make_params(dtype);
    AdamW adamw(ref, kOptions);
    ZeroAdamW zero(params, kOptions, world(), true);
    for (int step = 1; step <= 2; ++step) replicated_and_sharded_step(adamw, ref, zero, params, step, dtype, 1.0);
    // Into fresh optimizers over fresh parameters (the starting weights, as a resumed run has
    // before it loads its state): the master weights of the state set the bf16 parameters.
    const NamedTensors ref2 = make_params(dtype), params2 = make_params(dtype);
    if (dtype == DType::f32) {  // f32 weights live in model.safetensors, not in the state
      NoGradGuard no_grad;
      for (size_t i = 0; i < ref.size(); ++i) {
        Tensor(ref2[i].second).copy_(ref[i].second.detach());
        Tensor(params2[i].second).copy_(params[i].second.detach());
      }
    }
    AdamW adamw2(ref2, kOptions);
    ZeroAdamW zero2(params2, kOptions, world(), true);
    adamw2.load_state_dict(zero.state_dict());
    zero2.load_state_dict(adamw.state_dict());
    expect_same_params(params2, ref, "ZeRO-1 parameters after loading AdamW's state");
    expect_same_bits(adamw2.state_dict(), adamw.state_dict(), "AdamW from ZeRO-1's state");
    expect_same_bits(zero2.state_dict(), adamw.state_dict(), "ZeRO-1 from AdamW's state");
    for (int step = 3; step <= 4; ++step) {
      replicated_and_sharded_step(adamw2, ref2, zero2, params2, step, dtype, 1.0);
      replicated_and_sharded_step(adamw, ref, zero, params, step, dtype, 1.0);
    }
    expect_same_params(params2, ref, "after two more steps");
    expect_same_params(ref2, ref, "after two more steps (AdamW)");
    expect_same_bits(zero2.state_dict(), adamw.state_dict(), "state after two more steps");
  }
}

// Default mode: each rank's .grad is its own mean gradient; ZeRO-1 reduce-scatters and averages
// them. The reference is one process on the mean of every rank's gradient.
TEST(Zero, DefaultModeAveragesTheRanksOwnGradients) {
  const int rank = world()->rank(), ranks = world()->size();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const NamedTensors ref = make_params(dtype), params = make_params(dtype);
    AdamW adamw(ref, kOptions);
    ZeroAdamW zero(params, kOptions, world(), false);
    adamw.load_master_weights(start_weights());
    zero.load_master_weights(start_weights());
    for (int step = 1; step <= 3; ++step) {
      std::vector<Tensor> ref_params;
      for (size_t i = 0; i < ref.size(); ++i) {
        Tensor sum = zeros(kShapes[i]);
        for (int r = 0; r < ranks; ++r) sum = sum + gradient(i, step, r, dtype).to(DType::f32);
        ref[i].second.set_grad(sum * (1.0 / ranks));
        params[i].second.set_grad(gradient(i, step, rank, dtype));
        ref_params.push_back(ref[i].second);
      }
      const double norm = grad_norm(ref_params);
      const double zero_norm = zero.reduce_gradients(1.0 / ranks);
      EXPECT_NEAR(zero_norm, norm, 1e-6 * norm) << "step " << step;
      const double clip = clip_coefficient(norm, 1.0);
      adamw.step(clip);
      zero.update(clip_coefficient(zero_norm, 1.0));
      adamw.zero_grad();
      zero.zero_grad();
    }
    const StateDict want = adamw.master_weights(), got = zero.master_weights();
    for (const auto& [name, w] : want) {
      const std::vector<float> a = floats(got.at(name)), b = floats(w);
      for (size_t j = 0; j < b.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-5 * (1 + std::fabs(b[j]))) << name << " " << j;
    }
  }
}

TEST(Zero, RefusesParametersOnSeveralDevicesOrOfOtherDtypes) {
  Tensor ints = zeros({4}, {.dtype = DType::i32});
  EXPECT_THROW(ZeroAdamW({{"i", ints}}, kOptions, world(), true), ValueError);
}

TSU_MPI_TEST_MAIN

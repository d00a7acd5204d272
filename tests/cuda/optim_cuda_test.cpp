// Optimizers and gradient utilities on the GPU against the CPU: AdamW (f32 in place, bf16/f16
// through fp32 master weights), SGD, the gradient norm, clipping, and the finiteness check.
#include "cuda/cuda_test_util.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace tsumugi {
namespace {
using testing::random_tensor;
using testing::relative_error;
using testing::tolerance_for;

const Device kGpu = Device::cuda(0);

// Odd sizes: 1, 7, 1,000 (2-D: decayed), 4,099, 45,000 (three chunks of the kernels) and a
// 1031 x 1031 matrix (65 chunks).
const std::vector<Shape> kShapes = {{1}, {7}, {40, 25}, {4099}, {9, 5000}, {1031, 1031}};

// Parameters of kShapes from fixed seeds, rounded to `rounding`, stored as `dtype` on `device`.
NamedTensors make_params(DType dtype, DType rounding, Device device) {
  NamedTensors params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor p = random_tensor(kShapes[i], 10 + i).to(rounding).to(dtype).to(device);
    p.set_requires_grad(true);
    params.emplace_back(std::string("p").append(std::to_string(i)), p);
  }
  return params;
}

// Gradients of `step`: the same values on every device, rounded to `rounding`, in `dtype`.
void set_grads(const NamedTensors& params, int step, DType rounding, DType dtype) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i].second;
    p.set_grad(random_tensor(p.shape(), 1000 * step + i, -0.5, 0.5).to(rounding).to(dtype).to(p.device()));
  }
}

std::vector<float> host_floats(const Tensor& t) { return t.to(Device::cpu()).to(DType::f32).to_vector<float>(); }

const AdamWOptions kOptions{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};

TEST(CudaOptim, AdamWF32MatchesCpuOverFiveSteps) {
  TSU_REQUIRE_GPU();
  const NamedTensors cpu = make_params(DType::f32, DType::f32, Device::cpu());
  const NamedTensors gpu = make_params(DType::f32, DType::f32, kGpu);
  AdamW cpu_opt(cpu, kOptions), gpu_opt(gpu, kOptions);
  for (int step = 1; step <= 5; ++step) {
    const double grad_scale = step == 3 ? 0.25 : 1.0;  // one step with unscaling folded in
    set_grads(cpu, step, DType::f32, DType::f32);
    set_grads(gpu, step, DType::f32, DType::f32);
    cpu_opt.step(grad_scale);
    gpu_opt.step(grad_scale);
  }
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_TRUE(gpu[i].second.device().is_cuda());
    EXPECT_LT(relative_error(gpu[i].second, cpu[i].second), 1e-6) << cpu[i].first;
  }
  const StateDict want = cpu_opt.state_dict(), got = gpu_opt.state_dict();
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, t] : want) EXPECT_LT(relative_error(got.at(name), t), 1e-6) << name;
}

// Parameters and gradients that start one element into their storage take the scalar path.
TEST(CudaOptim, AdamWOnUnalignedViewsMatchesCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor start = random_tensor({4100}, 5).to(dtype).to(DType::f32);
    Tensor cpu_w = start.narrow(0, 1, 4099).contiguous().view({1, 4099});
    cpu_w.set_requires_grad(true);
    Tensor gpu_w = start.to(dtype).to(kGpu).narrow(0, 1, 4099).view({1, 4099});
    gpu_w.set_requires_grad(true);
    AdamW cpu_opt({{"w", cpu_w}}, kOptions), gpu_opt({{"w", gpu_w}}, kOptions);
    for (int step = 1; step <= 3; ++step) {
      const Tensor g = random_tensor({4100}, 50 + step).to(dtype).to(DType::f32);
      cpu_w.set_grad(g.narrow(0, 1, 4099).contiguous().view({1, 4099}));
      gpu_w.set_grad(g.to(dtype).to(kGpu).narrow(0, 1, 4099).view({1, 4099}));
      cpu_opt.step();
      gpu_opt.step();
    }
    EXPECT_LT(relative_error(gpu_opt.master_weight(0), cpu_w), 1e-6) << dtype_name(dtype);
    EXPECT_LT(relative_error(gpu_w.to(DType::f32), cpu_w), tolerance_for(dtype)) << dtype_name(dtype);
  }
}

// bf16/f16 parameters: the fp32 master weights follow an fp32 CPU run given the same gradients,
// and the parameters hold them rounded to nearest even.
TEST(CudaOptim, HalfParametersKeepFp32MasterWeightsThatTrackAnFp32Run) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::bf16, DType::f16}) {
    const NamedTensors cpu = make_params(DType::f32, dtype, Device::cpu());
    const NamedTensors gpu = make_params(dtype, dtype, kGpu);
    AdamW cpu_opt(cpu, kOptions), gpu_opt(gpu, kOptions);
    for (int step = 1; step <= 5; ++step) {
      set_grads(cpu, step, dtype, DType::f32);
      set_grads(gpu, step, dtype, dtype);
      cpu_opt.step();
      gpu_opt.step();
    }
    const StateDict state = gpu_opt.state_dict();
    for (size_t i = 0; i < cpu.size(); ++i) {
      const std::string what = std::string(dtype_name(dtype)) + " " + cpu[i].first;
      const Tensor master = gpu_opt.master_weight(i);
      EXPECT_EQ(master.dtype(), DType::f32) << what;
      EXPECT_TRUE(master.device().is_cuda()) << what;
      EXPECT_LT(relative_error(master, cpu[i].second), 1e-6) << what;
      EXPECT_EQ(gpu[i].second.dtype(), dtype) << what;
      EXPECT_LT(relative_error(gpu[i].second.to(DType::f32), cpu[i].second), tolerance_for(dtype)) << what;
      EXPECT_EQ(host_floats(gpu[i].second), host_floats(master.to(dtype))) << what << ": not the rounded master";
      ASSERT_TRUE(state.count("master." + cpu[i].first)) << what;
      EXPECT_EQ(state.at("master." + cpu[i].first).dtype(), DType::f32) << what;
    }
  }
}

TEST(CudaOptim, WeightDecayAppliesOnlyWhereTheCpuAppliesIt) {
  TSU_REQUIRE_GPU();
  auto run = [](Device device) {
    NamedTensors params;
    for (const Shape& shape : std::vector<Shape>{{3, 5}, {2, 3, 4}, {7}, {1}}) {
      Tensor p = full(shape, 2.0, {.device = device});
      p.set_requires_grad(true);
      p.set_grad(zeros(shape, {.device = device}));  // no gradient step: only the decay moves p
      params.emplace_back(std::string("p").append(std::to_string(params.size())), p);
    }
    AdamW opt(params, {.lr = 0.1, .weight_decay = 0.5});
    opt.step();
    std::vector<std::vector<float>> out;
    for (const auto& [name, p] : params) out.push_back(host_floats(p));
    return out;
  };
  const auto cpu = run(Device::cpu()), gpu = run(kGpu);
  EXPECT_EQ(gpu, cpu);
  const float decayed = 2.0f * static_cast<float>(1.0 - 0.1 * 0.5);
  EXPECT_EQ(gpu[0][0], decayed);  // 2-D
  EXPECT_EQ(gpu[1][0], decayed);  // 3-D
  EXPECT_EQ(gpu[2][0], 2.0f);     // 1-D: no decay
  EXPECT_EQ(gpu[3][0], 2.0f);
}

TEST(CudaOptim, SgdMatchesCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const NamedTensors cpu = make_params(DType::f32, dtype, Device::cpu());
    const NamedTensors gpu = make_params(dtype, dtype, kGpu);
    SGD cpu_opt(cpu, 0.1, 0.9, 0.01), gpu_opt(gpu, 0.1, 0.9, 0.01);
    for (int step = 1; step <= 4; ++step) {
      set_grads(cpu, step, dtype, DType::f32);
      set_grads(gpu, step, dtype, dtype);
      cpu_opt.step();
      gpu_opt.step();
    }
    const double tol = dtype == DType::f32 ? 1e-6 : tolerance_for(dtype);
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_LT(relative_error(gpu[i].second.to(DType::f32), cpu[i].second), tol)
          << dtype_name(dtype) << " " << cpu[i].first;
  }
}

// Gradients of mixed dtypes (one launch each) and a parameter without a gradient.
TEST(CudaOptim, GradNormAndClippingMatchCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<std::pair<Shape, DType>> grads = {{{1}, DType::f32},     {{7}, DType::bf16},
                                                       {{40, 25}, DType::f32}, {{4099}, DType::bf16},
                                                       {{1 << 20 | 3}, DType::f32}};
  std::vector<Tensor> cpu, gpu;
  for (size_t i = 0; i < grads.size(); ++i) {
    const auto& [shape, dtype] = grads[i];
    const Tensor g = random_tensor(shape, 300 + i).to(dtype);
    cpu.push_back(zeros(shape).set_requires_grad());
    cpu.back().set_grad(g.to(DType::f32));
    gpu.push_back(zeros(shape, {.device = kGpu}).set_requires_grad());
    gpu.back().set_grad(g.to(kGpu));
  }
  cpu.push_back(zeros({3}).set_requires_grad());  // no gradient: skipped
  gpu.push_back(zeros({3}, {.device = kGpu}).set_requires_grad());
  const double norm = grad_norm(cpu);
  EXPECT_NEAR(grad_norm(gpu), norm, 1e-5 * norm);
  const Tensor before = gpu[0].grad();
  const std::vector<float> before_values = host_floats(before);
  EXPECT_NEAR(clip_grad_norm(gpu, 1.0), norm, 1e-5 * norm);
  clip_grad_norm(cpu, 1.0);
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor g = gpu[i].grad();
    EXPECT_TRUE(g.device().is_cuda()) << i;
    EXPECT_EQ(g.dtype(), grads[i].second) << i;
    EXPECT_LT(relative_error(g.to(DType::f32), cpu[i].grad()), tolerance_for(grads[i].second)) << i;
  }
  EXPECT_EQ(host_floats(before), before_values);  // scaled into new tensors, not in place
  EXPECT_NEAR(grad_norm(gpu), 1.0, 1e-3);
  EXPECT_FALSE(gpu.back().grad().defined());
}

// What the pipeline's norm relies on: a gradient's pieces are the same whichever gradients
// share the call (mixed dtypes are launched by dtype and put back in order), they are the
// CPU's sums of squares per 16,384 elements, and grad_norm adds exactly those pieces in order.
TEST(CudaOptim, SquarePiecesOfAGradientDoNotDependOnTheOthers) {
  TSU_REQUIRE_GPU();
  ASSERT_EQ(grad_square_piece_size(kGpu), 16384);
  const std::vector<std::pair<Shape, DType>> grads = {
      {{5000}, DType::bf16}, {{40000}, DType::f32}, {{3}, DType::f16}, {{16384 * 2 + 1}, DType::bf16}};
  std::vector<Tensor> gpu;
  for (size_t i = 0; i < grads.size(); ++i) {
    gpu.push_back(zeros(grads[i].first, {.device = kGpu}).set_requires_grad());
    gpu.back().set_grad(random_tensor(grads[i].first, 700 + i).to(grads[i].second).to(kGpu));
  }
  gpu.insert(gpu.begin() + 1, zeros({9}, {.device = kGpu}).set_requires_grad());  // no gradient
  const std::vector<std::vector<double>> together = grad_square_pieces(gpu);
  ASSERT_EQ(together.size(), gpu.size());
  EXPECT_TRUE(together[1].empty());
  double total = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const std::vector<std::vector<double>> alone = grad_square_pieces({gpu[i]});
    EXPECT_EQ(alone[0], together[i]) << i;  // bit for bit
    if (!gpu[i].grad().defined()) continue;
    const int64_t n = gpu[i].numel();
    ASSERT_EQ(static_cast<int64_t>(together[i].size()), (n + 16383) / 16384) << i;
    const std::vector<float> g = host_floats(gpu[i].grad());
    for (size_t c = 0; c < together[i].size(); ++c) {
      double expected = 0;
      for (int64_t j = static_cast<int64_t>(c) * 16384; j < std::min<int64_t>(n, (c + 1) * 16384); ++j)
        expected += static_cast<double>(g[j]) * g[j];
      EXPECT_NEAR(together[i][c], expected, 1e-5 * expected) << i << " piece " << c;
      total += together[i][c];
    }
  }
  EXPECT_EQ(grad_norm(gpu), std::sqrt(total));
}

TEST(CudaOptim, GradsFiniteDetectsNanAndInf) {
  TSU_REQUIRE_GPU();
  Tensor a = zeros({4099}, {.device = kGpu}).set_requires_grad();
  Tensor b = zeros({1000}, {.dtype = DType::bf16, .device = kGpu}).set_requires_grad();
  Tensor c = zeros({7}, {.dtype = DType::f16, .device = kGpu}).set_requires_grad();
  Tensor unused = zeros({5}, {.device = kGpu}).set_requires_grad();
  auto set = [](const Tensor& p, int64_t index, float value) {
    Tensor g = random_tensor(p.shape(), 77);
    if (index >= 0) g.data<float>()[index] = value;
    p.set_grad(g.to(p.dtype()).to(kGpu));
  };
  set(a, -1, 0);
  set(b, -1, 0);
  set(c, 3, 60000.0f);  // large but finite in f16
  EXPECT_TRUE(grads_finite({a, b, c, unused}));
  set(a, 4098, NAN);  // the last element: the scalar tail
  EXPECT_FALSE(grads_finite({a, b, c, unused}));
  set(a, -1, 0);
  set(b, 17, INFINITY);  // inside an aligned group of 8
  EXPECT_FALSE(grads_finite({a, b, c, unused}));
  set(b, -1, 0);
  set(c, 6, 70000.0f);  // overflows f16: Inf
  EXPECT_FALSE(grads_finite({a, b, c, unused}));
  set(c, -1, 0);
  EXPECT_TRUE(grads_finite({a, b, c, unused}));
}

TEST(CudaOptim, StateDictRoundTripResumesBitForBit) {
  TSU_REQUIRE_GPU();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const NamedTensors a = make_params(dtype, dtype, kGpu);
    AdamW first(a, kOptions);
    for (int step = 1; step <= 3; ++step) {
      set_grads(a, step, dtype, dtype);
      first.step();
    }
    StateDict saved;  // as a checkpoint holds it: on the CPU
    for (const auto& [name, t] : first.state_dict()) saved.emplace(name, t.to(Device::cpu()).clone());
    NamedTensors b;
    for (const auto& [name, p] : a) {
      Tensor copy = p.detach().to(Device::cpu()).to(kGpu);
      copy.set_requires_grad(true);
      b.emplace_back(name, copy);
    }
    AdamW resumed(b, kOptions);
    resumed.load_state_dict(saved);
    EXPECT_EQ(resumed.steps(), 3);
    for (int step = 4; step <= 5; ++step) {
      set_grads(a, step, dtype, dtype);
      set_grads(b, step, dtype, dtype);
      first.step();
      resumed.step();
    }
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(host_floats(b[i].second), host_floats(a[i].second)) << dtype_name(dtype) << " " << a[i].first;
      EXPECT_EQ(host_floats(resumed.master_weight(i)), host_floats(first.master_weight(i)))
          << dtype_name(dtype) << " " << a[i].first;
    }
  }
}

TEST(CudaOptim, TwoIdenticalRunsGiveIdenticalBits) {
  TSU_REQUIRE_GPU();
  auto run = [] {
    const NamedTensors params = make_params(DType::bf16, DType::bf16, kGpu);
    std::vector<Tensor> list;
    for (const auto& [name, p] : params) list.push_back(p);
    AdamW opt(params, kOptions);
    std::vector<double> norms;
    for (int step = 1; step <= 5; ++step) {
      set_grads(params, step, DType::bf16, DType::bf16);
      norms.push_back(clip_grad_norm(list, 5.0));
      opt.step();
    }
    std::vector<std::vector<float>> weights;
    for (size_t i = 0; i < params.size(); ++i) weights.push_back(host_floats(opt.master_weight(i)));
    return std::make_pair(norms, weights);
  };
  const auto one = run(), two = run();
  EXPECT_EQ(one.first, two.first);
  EXPECT_TRUE(one.second == two.second);
}

TEST(CudaOptim, MixedDevicesAreErrors) {
  TSU_REQUIRE_GPU();
  Tensor a = zeros({3}).set_requires_grad();
  Tensor b = zeros({3}, {.device = kGpu}).set_requires_grad();
  EXPECT_THROW((AdamW(NamedTensors{{"a", a}, {"b", b}}, AdamWOptions{})), ValueError);
  a.set_grad(ones({3}));
  b.set_grad(ones({3}, {.device = kGpu}));
  EXPECT_THROW(grad_norm({a, b}), ValueError);
  EXPECT_THROW(grads_finite({a, b}), ValueError);
  EXPECT_THROW(scale_grads({a, b}, 2.0), ValueError);
  AdamW opt({{"b", b}}, {});
  b.set_grad(ones({3}));  // the gradient on the CPU, the parameter on the GPU
  EXPECT_THROW(opt.step(), ValueError);
  EXPECT_EQ(opt.steps(), 0);
}

}  // namespace
}  // namespace tsumugi

// Elementwise ops on the GPU against the CPU: arithmetic with broadcasting over any strides, unary
// math with gradients, and the scalar operators.
#include "cuda/cuda_test_util.h"

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::grad_input;
using testing::OpFn;
using testing::random_tensor;

constexpr DType kDtypes[] = {DType::f32, DType::bf16};

// The four operators, as functions of two inputs.
std::vector<std::pair<std::string, OpFn>> arithmetic() {
  return {{"add", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] + in[1]}; }},
          {"sub", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] - in[1]}; }},
          {"mul", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] * in[1]}; }},
          {"div", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] / in[1]}; }}};
}

TEST(CudaElementwise, ArithmeticOnEqualShapesMatchesCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : kDtypes) {
    for (const auto& [name, fn] : arithmetic()) {
      // b in [0.5, 2) keeps division well conditioned.
      expect_matches_cpu(name, fn, {grad_input({37, 129}, 1), grad_input({37, 129}, 2, 0.5, 2.0)}, dtype);
      expect_matches_cpu(name + " large", fn, {grad_input({999, 1031}, 3), grad_input({999, 1031}, 4, 0.5, 2.0)}, dtype);
    }
  }
}

TEST(CudaElementwise, BroadcastingMatchesCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{3, 1, 5}, {4, 5}}, {{4, 5}, {3, 1, 5}}, {{6, 7}, {7}}, {{6, 7}, {6, 1}}, {{6, 7}, {}},
      {{}, {2, 3, 4}},     {{2, 1, 3, 1}, {5, 1, 7}}, {{257, 768}, {768}}};
  for (DType dtype : kDtypes) {
    for (const auto& [name, fn] : arithmetic()) {
      for (const auto& [sa, sb] : shapes) {
        expect_matches_cpu(name + " " + shape_str(sa) + " " + shape_str(sb), fn,
                           {grad_input(sa, 5), grad_input(sb, 6, 0.5, 2.0)}, dtype);
      }
    }
  }
}

TEST(CudaElementwise, NonContiguousInputsMatchCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<std::pair<std::string, OpFn>> cases = {
      {"transposed + contiguous",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0].t() + in[1]}; }},
      {"transposed * transposed",
       [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0].t() * in[1].t()}; }},
      {"strided slice / strided column",  // (11, 3) with strides (6, 2) over (11, 1) with stride 6
       [](const std::vector<Tensor>& in) {
         return std::vector<Tensor>{in[0].slice(1, 0, 6, 2) / in[1].select(1, 0).unsqueeze(1)};
       }},
      {"permuted - strided row",  // (2, 11, 3) with permuted strides minus (3) with stride 6
       [](const std::vector<Tensor>& in) {
         return std::vector<Tensor>{in[0].reshape({11, 3, 2}).permute({2, 0, 1}) - in[1].select(1, 0).narrow(0, 0, 3)};
       }},
      {"misaligned views (offset by one element)", [](const std::vector<Tensor>& in) {
         const Tensor a = in[0].flatten().narrow(0, 1, 64), b = in[1].flatten().narrow(0, 2, 64);
         return std::vector<Tensor>{a * b, a + 1.0};
       }}};
  for (DType dtype : kDtypes) {
    for (const auto& [name, fn] : cases)
      expect_matches_cpu(name, fn, {grad_input({11, 6}, 7), grad_input({11, 6}, 8, 0.5, 2.0)}, dtype);
  }
}

TEST(CudaElementwise, UnaryOpsMatchCpu) {
  TSU_REQUIRE_GPU();
  struct Case {
    std::string name;
    std::function<Tensor(const Tensor&)> f;
    double lo, hi;
  };
  const std::vector<Case> cases = {
      {"exp", [](const Tensor& x) { return exp(x); }, -3, 3},
      {"log", [](const Tensor& x) { return log(x); }, 0.5, 4},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -6, 6},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.5, 4},
      {"relu", [](const Tensor& x) { return relu(x); }, -1, 1},
      {"square", [](const Tensor& x) { return square(x); }, -2, 2},
      {"pow 1.5", [](const Tensor& x) { return pow(x, 1.5); }, 0.5, 2},
      {"pow -2", [](const Tensor& x) { return pow(x, -2.0); }, 0.5, 2},
      {"neg", [](const Tensor& x) { return neg(x); }, -1, 1},
      {"affine", [](const Tensor& x) { return affine(x, -0.75, 0.25); }, -1, 1},
  };
  for (DType dtype : kDtypes) {
    for (const Case& c : cases) {
      const OpFn fn = [f = c.f](const std::vector<Tensor>& in) {
        // Also through a transposed view, which the GPU reads after a contiguous copy.
        return std::vector<Tensor>{f(in[0]), f(in[0].t())};
      };
      expect_matches_cpu(c.name, fn, {grad_input({33, 65}, 9, c.lo, c.hi)}, dtype);
      expect_matches_cpu(c.name + " large", fn, {grad_input({1024, 1027}, 10, c.lo, c.hi)}, dtype);
    }
  }
}

TEST(CudaElementwise, ScalarOperatorsStayOnTheGpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    return std::vector<Tensor>{x * 2.0, 2.0 - x, x + 1.5, x - 0.5, x / 4.0, 3.0 * x, 1.0 + x, -x};
  };
  for (DType dtype : kDtypes) expect_matches_cpu("scalar operators", fn, {grad_input({19, 23}, 11)}, dtype);
}

TEST(CudaElementwise, MatchesCpuInF64) {
  TSU_REQUIRE_GPU();
  // The harness compares against f32 on the CPU; here both sides compute in f64.
  const auto f = [](const Tensor& a, const Tensor& b) { return a * b + exp(a) / b - pow(b, 1.5) + sigmoid(a); };
  const Tensor a = random_tensor({7, 13}, 12).to(DType::f64);
  const Tensor b = random_tensor({13}, 13, 0.5, 2).to(DType::f64);
  const Tensor want = f(a, b);
  const Tensor got = f(a.to(Device::cuda(0)), b.to(Device::cuda(0)));
  EXPECT_EQ(got.dtype(), DType::f64);
  EXPECT_LT(testing::relative_error(got, want), 1e-12);
}

TEST(CudaElementwise, OperandsOnDifferentDevicesAreAnError) {
  TSU_REQUIRE_GPU();
  const Tensor cpu = random_tensor({3, 4}, 14);
  const Tensor gpu = cpu.to(Device::cuda(0));
  EXPECT_THROW(add(cpu, gpu), ValueError);
  EXPECT_THROW(mul(gpu, cpu), ValueError);
  try {
    (void)sub(gpu, cpu);
    ADD_FAILURE() << "sub accepted a cpu and a cuda tensor";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("[sub] b is on cpu but a is on cuda:0"), std::string::npos) << e.what();
  }
}

TEST(CudaElementwise, SameInputsGiveIdenticalBits) {
  TSU_REQUIRE_GPU();
  const Tensor a = random_tensor({301, 517}, 15).to(Device::cuda(0));
  const Tensor b = random_tensor({517}, 16, 0.5, 2).to(Device::cuda(0));
  const auto run = [&] { return (exp(a) / b - a * b).to(Device::cpu()).to_vector<float>(); };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace tsumugi

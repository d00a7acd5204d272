// Reductions on the GPU against the CPU: sum and mean over any dimensions, max/argmax with the
// CPU's tie and NaN rules, sum_to, a 100M-element sum, and bitwise determinism.
#include "cuda/cuda_test_util.h"

#include <limits>

namespace tsumugi {
namespace {
using testing::expect_matches_cpu;
using testing::grad_input;
using testing::OpFn;
using testing::random_tensor;
using testing::relative_error;

constexpr DType kDtypes[] = {DType::f32, DType::bf16};

OpFn sum_over(std::vector<int64_t> dims, bool keepdim) {
  return [=](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0], dims, keepdim)}; };
}

std::string dims_str(const std::vector<int64_t>& dims, bool keepdim) {
  std::string s = "{";
  for (int64_t d : dims) s += std::to_string(d) + ",";
  return s + "}" + (keepdim ? " keepdim" : "");
}

TEST(CudaReduce, SumOverAnyDimensionsMatchesCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<std::vector<int64_t>> dim_sets = {{0}, {1}, {2}, {-1}, {1, 2}, {0, 1}, {0, 2}, {}};
  for (DType dtype : kDtypes) {
    for (const auto& dims : dim_sets) {
      for (bool keepdim : {false, true}) {
        expect_matches_cpu("sum " + dims_str(dims, keepdim), sum_over(dims, keepdim), {grad_input({6, 7, 9}, 1)}, dtype);
      }
    }
  }
}

TEST(CudaReduce, MeanMatchesCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : kDtypes) {
    for (const auto& dims : std::vector<std::vector<int64_t>>{{0}, {1, 2}, {}}) {
      for (bool keepdim : {false, true}) {
        const OpFn fn = [=](const std::vector<Tensor>& in) { return std::vector<Tensor>{mean(in[0], dims, keepdim)}; };
        expect_matches_cpu("mean " + dims_str(dims, keepdim), fn, {grad_input({5, 11, 13}, 2)}, dtype);
      }
    }
  }
}

TEST(CudaReduce, SumOfNonContiguousInputsMatchesCpu) {
  TSU_REQUIRE_GPU();
  const OpFn fn = [](const std::vector<Tensor>& in) {
    const Tensor t = in[0].transpose(0, 2);  // (9, 7, 6)
    return std::vector<Tensor>{sum(t, {1}), sum(t, {0, 2}, true), sum(in[0].slice(1, 1, 7, 3), {})};
  };
  for (DType dtype : kDtypes) expect_matches_cpu("non-contiguous sums", fn, {grad_input({6, 7, 9}, 3)}, dtype);
}

// Shapes that take each kernel: short rows (one thread per row), rows for one warp, rows for one
// block, rows cut into chunks (with lengths that are not multiples of the vector width), and
// column sums with and without chunks.
TEST(CudaReduce, EveryKernelShapeMatchesCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<std::tuple<Shape, std::vector<int64_t>>> cases = {
      {{1001, 5}, {1}},      {{333, 300}, {1}},     {{7, 5000}, {1}},   {{3, 70001}, {1}},
      {{1, 1000003}, {}},    {{3000, 37}, {0}},     {{2, 513, 3}, {1}}, {{8192, 768}, {0}},
      {{64, 100, 40}, {0, 1}}, {{4, 1, 6}, {1}},    {{17}, {0}},        {{2, 20000, 33}, {1}}};
  for (DType dtype : kDtypes) {
    for (const auto& [shape, dims] : cases) {
      expect_matches_cpu("sum " + shape_str(shape) + " " + dims_str(dims, false), sum_over(dims, false),
                         {grad_input(shape, 4)}, dtype);
    }
  }
}

TEST(CudaReduce, SumOfOneHundredMillionElementsIsAccurate) {
  TSU_REQUIRE_GPU();
  const int64_t n = 100'000'000;
  // Positive values, so that the sum is far from zero and the relative error means something.
  const Tensor x = random_tensor({n}, 5, 0.0, 1.0);
  const Tensor want = sum(x);  // the CPU accumulates in double
  const Tensor gpu = x.to(Device::cuda(0));
  EXPECT_LT(relative_error(sum(gpu), want), 1e-6);
  EXPECT_LT(relative_error(mean(gpu), mean(x)), 1e-6);
  EXPECT_LT(relative_error(sum(gpu.reshape({4, n / 4}), {1}), sum(x.reshape({4, n / 4}), {1})), 1e-6);
  EXPECT_LT(relative_error(sum(gpu.reshape({n / 1000, 1000}), {0}), sum(x.reshape({n / 1000, 1000}), {0})), 1e-6);
  // Integers are summed exactly: every partial sum of ones is a multiple of the chunk length.
  EXPECT_EQ(sum(ones({n}, {.device = Device::cuda(0)})).item<float>(), 1e8f);
}

TEST(CudaReduce, SameInputsGiveIdenticalBits) {
  TSU_REQUIRE_GPU();
  const Tensor x = random_tensor({3, 700001}, 6).to(Device::cuda(0));
  const Tensor y = random_tensor({5000, 300}, 7).to(Device::cuda(0));
  const auto run = [&] {
    std::vector<float> out = sum(x).to(Device::cpu()).to_vector<float>();
    for (const Tensor& t : {sum(x, {1}), sum(y, {0}), mean(y, {1}), sum_to(y, {1, 300})}) {
      const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  };
  EXPECT_EQ(run(), run());
  // The vector loads of aligned rows and the scalar loads of misaligned ones add in one order.
  const Tensor view = x.flatten().narrow(0, 1, 1'000'000);  // 4 bytes past an aligned address
  EXPECT_EQ(sum(view).item<float>(), sum(view.clone()).item<float>());
}

TEST(CudaReduce, SumToMatchesCpu) {
  TSU_REQUIRE_GPU();
  const std::vector<Shape> targets = {{3, 1}, {5}, {1, 5}, {4, 1, 1}, {4, 3, 5}, {}};
  for (DType dtype : kDtypes) {
    for (const Shape& target : targets) {
      const OpFn fn = [=](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum_to(in[0], target)}; };
      expect_matches_cpu("sum_to " + shape_str(target), fn, {grad_input({4, 3, 5}, 8)}, dtype);
    }
  }
}

TEST(CudaReduce, MaxMatchesCpuWithGradient) {
  TSU_REQUIRE_GPU();
  const std::vector<std::tuple<Shape, int64_t>> cases = {
      {{7, 300}, 1}, {{3, 5000}, 1}, {{5, 9, 4}, 1}, {{5, 9, 4}, 0}, {{5, 9, 4}, -1}, {{2, 50257}, -1}};
  for (DType dtype : kDtypes) {
    for (const auto& [shape, dim] : cases) {
      for (bool keepdim : {false, true}) {
        const OpFn fn = [=](const std::vector<Tensor>& in) { return std::vector<Tensor>{max(in[0], dim, keepdim)}; };
        expect_matches_cpu("max " + shape_str(shape) + " dim " + std::to_string(dim), fn, {grad_input(shape, 9)}, dtype);
      }
    }
  }
}

// argmax on the GPU and on the CPU from the same values (rounded to `dtype` first).
void expect_same_argmax(const Tensor& x, int64_t dim, DType dtype, const std::string& what) {
  const Tensor rounded = x.to(dtype);
  const Tensor want = argmax(rounded.to(DType::f32), dim);
  const Tensor got = argmax(rounded.to(Device::cuda(0)), dim);
  EXPECT_EQ(got.dtype(), DType::i64);
  EXPECT_TRUE(got.device().is_cuda());
  EXPECT_EQ(got.to(Device::cpu()).to_vector<int64_t>(), want.to_vector<int64_t>()) << what << " " << dtype_name(dtype);
}

TEST(CudaReduce, ArgmaxPicksTheFirstMaximumAndTheFirstNaNLikeTheCpu) {
  TSU_REQUIRE_GPU();
  for (DType dtype : kDtypes) {
    // Few distinct values, so that most rows have ties.
    for (const Shape& shape : std::vector<Shape>{{9, 31}, {5, 1000}, {4, 4099}, {6, 7, 5}}) {
      const Tensor x = random_tensor(shape, 10, 0, 4).to(DType::i32).to(DType::f32);
      for (int64_t dim = 0; dim < x.dim(); ++dim) expect_same_argmax(x, dim, dtype, "ties " + shape_str(shape));
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> values(3 * 2000);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 7);
    values[1500] = nan;  // row 0: the first NaN wins over a later one and over larger numbers
    values[1900] = nan;
    values[2000 + 3] = nan;  // row 1: a NaN at the start
    values[4000 + 1999] = -std::numeric_limits<float>::infinity();
    const Tensor rows = from_data<float>(values, {3, 2000});
    expect_same_argmax(rows, 1, dtype, "NaN rows");
    expect_same_argmax(rows.slice(1, 0, 300), 1, dtype, "NaN short rows");
    expect_same_argmax(rows.t().contiguous(), 0, dtype, "NaN columns");
  }
}

}  // namespace
}  // namespace tsumugi

// Every op: values against a plain reference, and gradients against float64 finite differences.
#include <gtest/gtest.h>
#include <tsumugi/core/ops.h>

#include <cmath>

#include <omp.h>

#include "support/gradcheck.h"

using namespace tsumugi;
using tsumugi::testing::gradcheck;

namespace {

Tensor rnd(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  return randn(shape, gen, {.dtype = DType::f64}, 0.0, scale);
}

void expect_close(const Tensor& a, const Tensor& b, double tol) {
  ASSERT_EQ(a.shape(), b.shape());
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], tol * (1 + std::fabs(y[i]))) << "element " << i;
}

}  // namespace

TEST(Elementwise, BroadcastsLikeNumPy) {
  Tensor a = from_data<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_data<float>({10, 20, 30});
  Tensor c = from_data<float>({100, 200}, {2, 1});
  EXPECT_EQ((a + b).to_vector<float>(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ((a * c).to_vector<float>(), (std::vector<float>{100, 200, 300, 800, 1000, 1200}));
  EXPECT_EQ((b - c).shape(), (Shape{2, 3}));
  EXPECT_EQ((a / 2.0).to_vector<float>(), (std::vector<float>{0.5, 1, 1.5, 2, 2.5, 3}));
  EXPECT_EQ((1.0 - a).to_vector<float>(), (std::vector<float>{0, -1, -2, -3, -4, -5}));
  EXPECT_THROW(a + from_data<float>({1, 2}), ValueError);
  EXPECT_THROW(a + b.to(DType::f64), ValueError);
}

TEST(Elementwise, BroadcastingGradients) {
  EXPECT_TRUE(gradcheck([](auto& in) { return add(in[0], in[1]); }, {rnd({2, 3}, 1), rnd({3}, 2)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sub(in[0], in[1]); }, {rnd({2, 1}, 1), rnd({1, 3}, 2)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return mul(in[0], in[1]); }, {rnd({2, 3}, 3), rnd({2, 1}, 4)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return div(in[0], in[1]); }, {rnd({2, 3}, 5), rnd({3}, 6) + 3.0}));
  EXPECT_TRUE(gradcheck([](auto& in) { return affine(in[0], -1.5, 2.0); }, {rnd({4}, 7)}));
}

TEST(Elementwise, UnaryGradients) {
  const Tensor x = rnd({3, 4}, 11);
  const Tensor positive = exp(rnd({3, 4}, 12));
  EXPECT_TRUE(gradcheck([](auto& in) { return exp(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return log(in[0]); }, {positive}));
  EXPECT_TRUE(gradcheck([](auto& in) { return tanh(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sigmoid(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sqrt(in[0]); }, {positive}));
  EXPECT_TRUE(gradcheck([](auto& in) { return square(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return pow(in[0], 2.5); }, {positive}));
  EXPECT_TRUE(gradcheck([](auto& in) { return relu(in[0]); }, {x}));
}

TEST(Elementwise, FastFloatExpIsAccurate) {
  Tensor x = arange(-80.0, 80.0, 0.01, {.dtype = DType::f32});
  const auto y = exp(x).to_vector<float>();
  const auto xs = x.to_vector<float>();
  for (size_t i = 0; i < xs.size(); ++i) {
    const double want = std::exp(static_cast<double>(xs[i]));
    ASSERT_NEAR(y[i], want, 4e-7 * want) << xs[i];
  }
}

TEST(Reduce, SumMeanMaxOverDimensions) {
  Tensor t = arange(0.0, 24.0, 1.0, {.dtype = DType::f32}).view({2, 3, 4});
  EXPECT_FLOAT_EQ(sum(t).item<float>(), 276.0f);
  EXPECT_EQ(sum(t, {1}).to_vector<float>(), (std::vector<float>{12, 15, 18, 21, 48, 51, 54, 57}));
  EXPECT_EQ(sum(t, {0, 2}, true).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(sum(t, {0, 2}).to_vector<float>(), (std::vector<float>{60, 92, 124}));
  EXPECT_EQ(mean(t, {-1}).to_vector<float>(), (std::vector<float>{1.5, 5.5, 9.5, 13.5, 17.5, 21.5}));
  EXPECT_EQ(max(t, 1).to_vector<float>(), (std::vector<float>{8, 9, 10, 11, 20, 21, 22, 23}));
  EXPECT_EQ(argmax(from_data<float>({1, 5, 5, 2}), 0).item<int64_t>(), 1);  // first maximum
  EXPECT_EQ(sum_to(ones({2, 3, 4}), {3, 1}).to_vector<float>(), (std::vector<float>{8, 8, 8}));
}

TEST(Reduce, Gradients) {
  EXPECT_TRUE(gradcheck([](auto& in) { return sum(in[0], {0, 2}); }, {rnd({2, 3, 4}, 21)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sum(in[0], {1}, true); }, {rnd({2, 3, 4}, 22)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return mean(in[0]); }, {rnd({2, 3}, 23)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return max(in[0], 1); }, {rnd({3, 5}, 24)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return sum_to(in[0], {3, 1}); }, {rnd({2, 3, 4}, 25)}));
}

TEST(Reduce, ResultDoesNotDependOnThreadCount) {
  Generator gen(3);
  Tensor x = randn({513, 1031}, gen);
  const auto all = sum(x, {0}).to_vector<float>();
  omp_set_num_threads(1);
  const auto one = sum(x, {0}).to_vector<float>();
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(all, one);
}

TEST(Matmul, MatchesNaiveProduct) {
  Tensor a = rnd({3, 4}, 31), b = rnd({4, 5}, 32);
  Tensor c = matmul(a, b);
  const auto av = a.to_vector<double>(), bv = b.to_vector<double>(), cv = c.to_vector<double>();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      double want = 0;
      for (int k = 0; k < 4; ++k) want += av[i * 4 + k] * bv[k * 5 + j];
      EXPECT_NEAR(cv[i * 5 + j], want, 1e-12);
    }
  // Transposed views give the same result as contiguous copies.
  expect_close(matmul(a.t().contiguous().t(), b.t().contiguous().t()), c, 1e-12);
  EXPECT_THROW(matmul(a, a), ValueError);
}

TEST(Matmul, BatchedBroadcastAndVectors) {
  Tensor a = rnd({2, 1, 3, 4}, 33), b = rnd({5, 4, 2}, 34);
  Tensor c = matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 5, 3, 2}));
  expect_close(c.select(0, 1).select(0, 3), matmul(a.select(0, 1).select(0, 0), b.select(0, 3)), 1e-12);
  EXPECT_EQ(matmul(rnd({4}, 35), rnd({4, 3}, 36)).shape(), (Shape{3}));
  EXPECT_EQ(matmul(rnd({2, 4}, 35), rnd({4}, 36)).shape(), (Shape{2}));
}

TEST(Matmul, Gradients) {
  EXPECT_TRUE(gradcheck([](auto& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}, 41), rnd({4, 2}, 42)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return matmul(in[0], in[1].t()); }, {rnd({3, 4}, 43), rnd({2, 4}, 44)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}, 45), rnd({4, 2}, 46)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return matmul(in[0], in[1]); }, {rnd({2, 1, 3, 4}, 47), rnd({3, 4, 2}, 48)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return matmul(in[0], in[1]); }, {rnd({4}, 49), rnd({4, 3}, 50)}));
}

TEST(Linear, MatchesMatmulPlusBiasAndHasGradients) {
  Tensor x = rnd({2, 3, 4}, 51), w = rnd({5, 4}, 52), b = rnd({5}, 53);
  expect_close(linear(x, w, b), matmul(x, w.t()) + b, 1e-12);
  expect_close(linear(x, w), matmul(x, w.t()), 1e-12);
  EXPECT_TRUE(gradcheck([](auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b}));
  // GPT-2's Conv1D keeps the weight as (in, out): linear(x, W.t()).
  EXPECT_TRUE(gradcheck([](auto& in) { return linear(in[0], in[1].t(), in[2]); }, {x, rnd({4, 5}, 54), b}));
  EXPECT_THROW(linear(x, rnd({5, 3}, 55)), ValueError);
}

TEST(Linear, GradientOfTransposedWeightIsContiguous) {
  Tensor w = rnd({4, 5}, 56).set_requires_grad();
  sum(linear(rnd({3, 4}, 57), w.t())).backward();
  EXPECT_TRUE(w.grad().is_contiguous());
}

TEST(Softmax, RowsSumToOneAndGradients) {
  Tensor x = rnd({3, 5}, 61, 3.0);
  const auto s = sum(softmax(x), {1}).to_vector<double>();
  for (double v : s) EXPECT_NEAR(v, 1.0, 1e-12);
  expect_close(log_softmax(x), log(softmax(x)), 1e-12);
  EXPECT_TRUE(gradcheck([](auto& in) { return softmax(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return softmax(in[0], 0); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return log_softmax(in[0]); }, {x}));
  // Large logits do not overflow.
  EXPECT_NEAR(softmax(from_data<float>({1000, 1000})).to_vector<float>()[0], 0.5f, 1e-6);
}

TEST(Embedding, PicksRowsAndAccumulatesRepeatedIds) {
  Tensor w = rnd({5, 3}, 71);
  Tensor ids = from_data<int32_t>({4, 0, 4}, {3});
  expect_close(embedding(w, ids).select(0, 0), w.select(0, 4), 0);
  EXPECT_TRUE(gradcheck([ids](auto& in) { return embedding(in[0], ids); }, {w}));
  EXPECT_THROW(embedding(w, from_data<int32_t>({5})), IndexError);
  EXPECT_THROW(embedding(w, from_data<int32_t>({-1})), IndexError);
}

TEST(Norms, LayerNormMatchesDefinition) {
  Tensor x = rnd({2, 3, 8}, 81, 2.0), w = rnd({8}, 82), b = rnd({8}, 83);
  Tensor mu = mean(x, {-1}, true);
  Tensor var = mean(square(x - mu), {-1}, true);
  expect_close(layer_norm(x, w, b, 1e-5), (x - mu) / sqrt(var + 1e-5) * w + b, 1e-10);
  EXPECT_TRUE(gradcheck([](auto& in) { return layer_norm(in[0], in[1], in[2]); }, {x, w, b}));
}

TEST(Norms, RmsNormMatchesDefinition) {
  Tensor x = rnd({2, 3, 8}, 84, 2.0), w = rnd({8}, 85);
  expect_close(rms_norm(x, w, 1e-6), x / sqrt(mean(square(x), {-1}, true) + 1e-6) * w, 1e-10);
  EXPECT_TRUE(gradcheck([](auto& in) { return rms_norm(in[0], in[1]); }, {x, w}));
}

TEST(Activations, ValuesAndGradients) {
  Tensor x = rnd({4, 6}, 91, 2.0), y = rnd({4, 6}, 92);
  const double c = std::sqrt(2.0 / M_PI);
  expect_close(gelu(x), 0.5 * x * (1.0 + tanh(c * (x + 0.044715 * x * x * x))), 1e-12);
  expect_close(silu(x), x * sigmoid(x), 1e-12);
  expect_close(swiglu(x, y), silu(x) * y, 1e-12);
  EXPECT_TRUE(gradcheck([](auto& in) { return gelu(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return silu(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](auto& in) { return swiglu(in[0], in[1]); }, {x, y}));
  // The float kernels agree with the double ones.
  expect_close(gelu(x.to(DType::f32)).to(DType::f64), gelu(x), 1e-6);
}

TEST(Rope, RotatesHalvesLikeHuggingFace) {
  const int64_t hd = 8, half = 4;
  Tensor x = rnd({1, 3, 2, hd}, 101);
  const double theta = 10000.0;
  Tensor y = rope(x, theta, 5);
  const auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(t + 5) / std::pow(theta, 2.0 * static_cast<double>(i) / hd);
        const size_t base = static_cast<size_t>((t * 2 + h) * hd);
        const double x1 = xv[base + i], x2 = xv[base + i + half];
        EXPECT_NEAR(yv[base + i], x1 * std::cos(angle) - x2 * std::sin(angle), 1e-12);
        EXPECT_NEAR(yv[base + i + half], x2 * std::cos(angle) + x1 * std::sin(angle), 1e-12);
      }
  EXPECT_TRUE(gradcheck([](auto& in) { return rope(in[0], 500.0, 2); }, {rnd({2, 3, 2, 4}, 102)}));
}

namespace {

// Attention from primitive ops, with an explicit (T, S) mask, as the reference.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t batch = q.size(0), t = q.size(1), hq = q.size(2), hd = q.size(3), s = k.size(1), hkv = k.size(2);
  auto heads = [&](const Tensor& x) {  // (B, S, Hkv, hd) -> (B, Hq, S, hd)
    return x.permute({0, 2, 1, 3}).unsqueeze(2).expand({batch, hkv, hq / hkv, s, hd}).reshape({batch, hq, s, hd});
  };
  std::vector<double> mask(static_cast<size_t>(t * s));
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < s; ++j) mask[static_cast<size_t>(i * s + j)] = j <= i + (s - t) ? 0.0 : -1e30;
  Tensor scores = matmul(q.permute({0, 2, 1, 3}), heads(k).transpose(-1, -2)) * (1.0 / std::sqrt(double(hd)));
  scores = scores + from_data<double>(mask, {t, s});
  return matmul(softmax(scores), heads(v)).permute({0, 2, 1, 3}).contiguous();
}

}  // namespace

TEST(Attention, MatchesNaiveAttentionWithGroupedHeads) {
  Tensor q = rnd({2, 70, 4, 8}, 111), k = rnd({2, 70, 2, 8}, 112), v = rnd({2, 70, 2, 8}, 113);
  expect_close(causal_attention(q, k, v), naive_attention(q, k, v), 1e-10);
  // More keys than queries (a KV cache): query t sees keys up to t + S - T.
  Tensor kc = rnd({1, 9, 1, 8}, 114), vc = rnd({1, 9, 1, 8}, 115), qc = rnd({1, 3, 2, 8}, 116);
  expect_close(causal_attention(qc, kc, vc), naive_attention(qc, kc, vc), 1e-10);
  // f32 agrees with f64.
  expect_close(causal_attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32)).to(DType::f64),
               causal_attention(q, k, v), 1e-5);
}

TEST(Attention, Gradients) {
  EXPECT_TRUE(gradcheck([](auto& in) { return causal_attention(in[0], in[1], in[2]); },
                        {rnd({2, 5, 4, 4}, 121), rnd({2, 5, 2, 4}, 122), rnd({2, 5, 2, 4}, 123)}));
  EXPECT_TRUE(gradcheck([](auto& in) { return causal_attention(in[0], in[1], in[2]); },
                        {rnd({1, 2, 2, 4}, 124), rnd({1, 4, 1, 4}, 125), rnd({1, 4, 1, 4}, 126)}));
}

TEST(Attention, GradientsMatchNaiveAcrossQueryBlocks) {
  // 70 queries span two query blocks of the kernel.
  Tensor q = rnd({1, 70, 2, 4}, 131).set_requires_grad(), k = rnd({1, 70, 1, 4}, 132).set_requires_grad(),
         v = rnd({1, 70, 1, 4}, 133).set_requires_grad();
  Tensor w = rnd({1, 70, 2, 4}, 134);
  sum(causal_attention(q, k, v) * w).backward();
  const Tensor gq = q.grad(), gk = k.grad(), gv = v.grad();
  q.zero_grad(), k.zero_grad(), v.zero_grad();
  sum(naive_attention(q, k, v) * w).backward();
  expect_close(gq, q.grad(), 1e-10);
  expect_close(gk, k.grad(), 1e-10);
  expect_close(gv, v.grad(), 1e-10);
}

TEST(Attention, RejectsMismatchedHeads) {
  EXPECT_THROW(causal_attention(rnd({1, 2, 3, 4}, 1), rnd({1, 2, 2, 4}, 2), rnd({1, 2, 2, 4}, 3)), ValueError);
}

TEST(CrossEntropy, MatchesLogSoftmaxAndIgnoresIndex) {
  Tensor logits = rnd({4, 7}, 141, 2.0);
  Tensor targets = from_data<int64_t>({3, -100, 0, 6});
  const auto lsm = log_softmax(logits).to_vector<double>();
  const double want = -(lsm[3] + lsm[2 * 7 + 0] + lsm[3 * 7 + 6]) / 3.0;
  EXPECT_NEAR(cross_entropy(logits, targets).item<double>(), want, 1e-12);
  EXPECT_TRUE(gradcheck([targets](auto& in) { return cross_entropy(in[0], targets); }, {logits}));
  EXPECT_TRUE(gradcheck([targets](auto& in) { return cross_entropy(in[0], targets, -100, 1e-2); }, {logits}));
  EXPECT_THROW(cross_entropy(logits, from_data<int64_t>({0, 1, 2, 7})), IndexError);
}

TEST(CrossEntropy, ZLossAddsSquaredLogSumExp) {
  Tensor logits = rnd({3, 5}, 151);
  Tensor targets = from_data<int32_t>({1, 2, 3});
  Tensor l = log(sum(exp(logits), {1}));
  const double z = mean(square(l)).item<double>();
  EXPECT_NEAR(cross_entropy(logits, targets, -100, 0.5).item<double>(),
              cross_entropy(logits, targets).item<double>() + 0.5 * z, 1e-12);
}

TEST(Dropout, DropsTheRightShareAndScalesTheRest) {
  Generator gen(5);
  Tensor x = ones({100000}).set_requires_grad();
  Tensor y = dropout(x, 0.25, gen);
  const auto v = y.to_vector<float>();
  int64_t zeros = 0;
  for (float e : v) {
    if (e == 0) ++zeros;
    else ASSERT_FLOAT_EQ(e, 1.0f / 0.75f);
  }
  EXPECT_NEAR(static_cast<double>(zeros) / 100000.0, 0.25, 0.01);
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), v);
  EXPECT_EQ(dropout(x, 0.25, gen, false).to_vector<float>(), x.to_vector<float>());
  // With the same generator state, the mask is the same: a finite-difference check applies.
  EXPECT_TRUE(gradcheck(
      [](auto& in) {
        Generator fixed(9);
        return dropout(in[0], 0.5, fixed);
      },
      {rnd({4, 5}, 171)}));
}

TEST(Shape, CatAndSplit) {
  Tensor a = rnd({2, 3}, 161), b = rnd({2, 2}, 162);
  Tensor c = cat({a, b}, 1);
  EXPECT_EQ(c.shape(), (Shape{2, 5}));
  expect_close(split(c, {3, 2}, 1)[1], b, 0);
  EXPECT_TRUE(gradcheck([](auto& in) { return cat({in[0], in[1]}, 1); }, {a, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return split(in[0], {1, 2}, 1)[1] * 2.0; }, {a}));
  EXPECT_THROW(split(a, {1, 1}, 1), ValueError);
}

TEST(Norms, AddLayerNormReturnsSumAndItsNorm) {
  Tensor x = rnd({2, 3, 8}, 181, 2.0), r = rnd({2, 3, 8}, 182), w = rnd({8}, 183), b = rnd({8}, 184);
  const auto [s, y] = add_layer_norm(x, r, w, b, 1e-5);
  expect_close(s, x + r, 0);
  expect_close(y, layer_norm(x + r, w, b, 1e-5), 1e-12);
  // Gradients reach x and residual through both outputs, together or alone.
  EXPECT_TRUE(gradcheck(
      [](auto& in) {
        const auto [sum, normed] = add_layer_norm(in[0], in[1], in[2], in[3]);
        return sum * 0.7 + normed;
      },
      {x, r, w, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return add_layer_norm(in[0], in[1], in[2], in[3]).second; }, {x, r, w, b}));
  EXPECT_TRUE(gradcheck([w, b](auto& in) { return add_layer_norm(in[0], in[1], w, b).first * 2.0; }, {x, r}));
  EXPECT_THROW(add_layer_norm(x, rnd({2, 3, 7}, 185), w, b), ValueError);
}

TEST(Norms, AddRmsNormReturnsSumAndItsNorm) {
  Tensor x = rnd({3, 2, 8}, 186, 2.0), r = rnd({3, 2, 8}, 187), w = rnd({8}, 188);
  const auto [s, y] = add_rms_norm(x, r, w, 1e-6);
  expect_close(s, x + r, 0);
  expect_close(y, rms_norm(x + r, w, 1e-6), 1e-12);
  EXPECT_TRUE(gradcheck(
      [](auto& in) {
        const auto [sum, normed] = add_rms_norm(in[0], in[1], in[2]);
        return sum * 0.7 + normed;
      },
      {x, r, w}));
  EXPECT_TRUE(gradcheck([](auto& in) { return add_rms_norm(in[0], in[1], in[2]).second; }, {x, r, w}));
  EXPECT_TRUE(gradcheck([w](auto& in) { return add_rms_norm(in[0], in[1], w).first * 2.0; }, {x, r}));
}

TEST(Linear, LinearGeluIsGeluOfLinear) {
  Tensor x = rnd({2, 3, 4}, 191), w = rnd({5, 4}, 192), b = rnd({5}, 193);
  expect_close(linear_gelu(x, w, b), gelu(linear(x, w, b)), 0);
  EXPECT_TRUE(gradcheck([](auto& in) { return linear_gelu(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](auto& in) { return linear_gelu(in[0], in[1]); }, {x, w}));
  EXPECT_THROW(linear_gelu(x, rnd({5, 3}, 194)), ValueError);
}

TEST(Matmul, Tf32IsOptIn) {
  EXPECT_FALSE(allow_tf32());
  set_allow_tf32(true);
  EXPECT_TRUE(allow_tf32());
  set_allow_tf32(false);
  EXPECT_FALSE(allow_tf32());
}

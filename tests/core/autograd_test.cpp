#include <gtest/gtest.h>
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include <cmath>

using namespace tsumugi;

TEST(Autograd, ChainRuleThroughSeveralOps) {
  Tensor x = from_data<double>({1.0, 2.0, 3.0}).set_requires_grad();
  Tensor y = sum(x * x * 3.0 + x);  // dy/dx = 6x + 1
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{7.0, 13.0, 19.0}));
  EXPECT_EQ(y.grad_fn_name(), "sum");
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(y.is_leaf());
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = from_data<double>({2.0}).set_requires_grad();
  sum(x * 5.0).backward();
  sum(x * 5.0).backward();
  EXPECT_DOUBLE_EQ(x.grad().item<double>(), 10.0);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, TensorUsedTwiceGetsBothContributions) {
  Tensor x = from_data<double>({3.0}).set_requires_grad();
  Tensor a = x * 2.0;
  Tensor y = sum(a * a + a);  // 4x^2 + 2x -> 8x + 2
  y.backward();
  EXPECT_DOUBLE_EQ(x.grad().item<double>(), 26.0);
}

TEST(Autograd, NoGradGuardStopsRecording) {
  Tensor x = ones({2}).set_requires_grad();
  {
    NoGradGuard no_grad;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
  }
  EXPECT_TRUE((x * 2.0).requires_grad());
}

TEST(Autograd, DetachCutsTheTape) {
  Tensor x = from_data<double>({1.0, 2.0}).set_requires_grad();
  Tensor d = (x * 3.0).detach();
  EXPECT_FALSE(d.requires_grad());
  Tensor y = sum(x * d);  // d is a constant: dy/dx = d
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3.0, 6.0}));
}

TEST(Autograd, NonScalarBackwardNeedsGradient) {
  Tensor x = ones({3}).set_requires_grad();
  Tensor y = x * 2.0;
  EXPECT_THROW(y.backward(), AutogradError);
  y.backward(from_data<float>({1, 2, 3}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 4, 6}));
}

TEST(Autograd, BackwardOnTensorWithoutGradIsAnError) {
  Tensor x = ones({1});
  EXPECT_THROW((x * 2.0).backward(), AutogradError);
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = ones({1}).set_requires_grad();
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_NEAR(x.grad().item<float>(), 2 * std::exp(1.0f), 1e-5);
  EXPECT_THROW(y.backward(), AutogradError);
}

TEST(Autograd, InPlaceChangeOfTrackedTensorIsRefused) {
  Tensor w = ones({2}).set_requires_grad();
  EXPECT_THROW(w.fill_(3.0), AutogradError);
  NoGradGuard no_grad;
  w.fill_(3.0);
  EXPECT_EQ(w.to_vector<float>(), (std::vector<float>{3, 3}));
}

TEST(Autograd, OnlyFloatingTensorsRequireGrad) {
  Tensor ids = zeros({2}, {.dtype = DType::i32});
  EXPECT_THROW(ids.set_requires_grad(), AutogradError);
}

TEST(Autograd, GradientsFlowThroughViews) {
  Tensor x = arange(0.0, 6.0, 1.0, {.dtype = DType::f64}).view({2, 3}).detach().set_requires_grad();
  Tensor y = sum(x.t().slice(0, 1, 3) * 2.0) + sum(x.select(0, 1).unsqueeze(0).expand({4, 3}));
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 2, 2, 4, 6, 6}));
}

TEST(Autograd, SplitPartsShareOneNode) {
  Tensor x = ones({2, 6}, {.dtype = DType::f64}).set_requires_grad();
  std::vector<Tensor> parts = split(x, {1, 2, 3}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].shape(), (Shape{2, 3}));
  Tensor y = sum(parts[0] * 1.0) + sum(parts[2] * 3.0);  // parts[1] unused: gradient 0
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 0, 0, 3, 3, 3, 1, 0, 0, 3, 3, 3}));
}

TEST(Autograd, GradReadyHookFiresOnceWhenTheGradientIsComplete) {
  Tensor w = from_data<double>({2.0}).set_requires_grad();
  std::vector<double> seen;
  w.set_grad_ready_hook([&](const Tensor& t) { seen.push_back(t.grad().item<double>()); });
  Tensor y = sum(w * 3.0) + sum(w * w);  // two uses: 3 + 2w = 7
  y.backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_DOUBLE_EQ(seen[0], 7.0);
  sum(w * 1.0).backward();  // accumulates: the hook sees the running total
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_DOUBLE_EQ(seen[1], 8.0);
  EXPECT_THROW((w * 2.0).set_grad_ready_hook(nullptr), AutogradError);
}

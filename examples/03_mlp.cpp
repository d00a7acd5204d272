// Lesson 3: a small neural network learns to tell two spirals apart.
//
// 400 points in the plane belong to two interleaved spirals. A multilayer perceptron
// (2 -> 64 -> 64 -> 2, GELU) is trained with AdamW on the cross-entropy of its two logits.
// At the end the program draws the regions it learned, with the training points on top.
#include <tsumugi/tsumugi.h>

#include <cmath>
#include <cstdio>
#include <numbers>

using namespace tsumugi;

// A module is a named tree of parameters; register_module makes "l1.weight" and so on.
class MLP : public Module {
 public:
  MLP() {
    l1 = register_module("l1", std::make_shared<Linear>(2, 64));
    l2 = register_module("l2", std::make_shared<Linear>(64, 64));
    l3 = register_module("l3", std::make_shared<Linear>(64, 2));
  }
  Tensor forward(const Tensor& x) const {  // (N, 2) -> (N, 2) logits
    return l3->forward(gelu(l2->forward(gelu(l1->forward(x)))));
  }
  std::shared_ptr<Linear> l1, l2, l3;
};

int main() {
  // 1. The data: two spirals, 200 points each, with a little noise.
  constexpr int64_t kPerClass = 200;
  Generator gen(0);
  const std::vector<float> noise = randn({2 * kPerClass, 2}, gen, {}, 0.0, 0.04).to_vector<float>();
  std::vector<float> points;
  std::vector<int32_t> labels;
  for (int k = 0; k < 2; ++k) {
    for (int64_t i = 0; i < kPerClass; ++i) {
      const double r = 0.1 + 0.9 * static_cast<double>(i) / kPerClass;
      const double t = 1.5 * std::numbers::pi * 2 * static_cast<double>(i) / kPerClass + k * std::numbers::pi;
      const size_t n = static_cast<size_t>(k * kPerClass + i);
      points.push_back(static_cast<float>(r * std::cos(t)) + noise[2 * n]);
      points.push_back(static_cast<float>(r * std::sin(t)) + noise[2 * n + 1]);
      labels.push_back(k);
    }
  }
  const Tensor x = from_data<float>(points, {2 * kPerClass, 2});
  const Tensor y = from_data<int32_t>(labels);

  // 2. The model and its initial weights (normal, std 0.5, from a seeded generator).
  MLP model;
  {
    NoGradGuard no_grad;
    for (auto& [name, p] : model.named_parameters()) {
      Generator init = Generator::for_name(1, name);
      if (p.dim() == 2) normal_(p, init, 0.0, 0.5);
    }
  }
  AdamW optimizer(model.named_parameters(), {.lr = 1e-2, .weight_decay = 0.0});

  // 3. Training: forward, loss, backward, update. Full batch, 1500 steps.
  auto accuracy = [&] {
    NoGradGuard no_grad;
    const auto predicted = argmax(model.forward(x), 1).to_vector<int64_t>();
    int correct = 0;
    for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
    return static_cast<double>(correct) / static_cast<double>(labels.size());
  };
  for (int step = 0; step <= 1500; ++step) {
    Tensor loss = cross_entropy(model.forward(x), y);
    if (step % 250 == 0) std::printf("step %4d  loss %.4f  accuracy %.1f%%\n", step, loss.item<float>(), 100 * accuracy());
    loss.backward();
    optimizer.step();
    optimizer.zero_grad();
  }

  // 4. The learned regions: '.' where the model says spiral 0, ' ' for spiral 1; points as o / x.
  constexpr int kWidth = 60, kHeight = 28;
  std::vector<float> grid;
  for (int row = 0; row < kHeight; ++row)
    for (int col = 0; col < kWidth; ++col) {
      grid.push_back(-1.1f + 2.2f * static_cast<float>(col) / (kWidth - 1));
      grid.push_back(1.1f - 2.2f * static_cast<float>(row) / (kHeight - 1));
    }
  NoGradGuard no_grad;
  const auto region = argmax(model.forward(from_data<float>(grid, {kWidth * kHeight, 2})), 1).to_vector<int64_t>();
  std::vector<std::string> canvas(kHeight, std::string(kWidth, ' '));
  for (int i = 0; i < kWidth * kHeight; ++i) canvas[i / kWidth][i % kWidth] = region[static_cast<size_t>(i)] == 0 ? '.' : ' ';
  for (size_t i = 0; i < labels.size(); ++i) {
    const int col = static_cast<int>(std::lround((points[2 * i] + 1.1f) / 2.2f * (kWidth - 1)));
    const int row = static_cast<int>(std::lround((1.1f - points[2 * i + 1]) / 2.2f * (kHeight - 1)));
    if (col >= 0 && col < kWidth && row >= 0 && row < kHeight) canvas[row][col] = labels[i] == 0 ? 'o' : 'x';
  }
  std::printf("\nlearned regions ('.' = spiral o, blank = spiral x):\n");
  for (const std::string& line : canvas) std::printf("|%s|\n", line.c_str());
  std::printf("final accuracy %.1f%%\n", 100 * accuracy());
  return accuracy() > 0.95 ? 0 : 1;
}

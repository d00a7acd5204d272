#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/train/generate.h>

#include <cmath>
#include <map>

using namespace tsumugi;

TEST(Sampling, GreedyTopKAndTopPRestrictTheChoices) {
  const Tensor logits = from_data<float>({1.0f, 3.0f, 2.0f, 0.5f});
  Generator gen(1);
  EXPECT_EQ(sample_token(logits, {.temperature = 0}, gen), 1);
  std::map<int64_t, int> seen_k, seen_p, seen_all;
  for (int i = 0; i < 2000; ++i) {
    ++seen_k[sample_token(logits, {.temperature = 1.0, .top_k = 2, .top_p = 1.0}, gen)];
    ++seen_p[sample_token(logits, {.temperature = 1.0, .top_k = 0, .top_p = 0.5}, gen)];
    ++seen_all[sample_token(logits, {.temperature = 1.0, .top_k = 0, .top_p = 1.0}, gen)];
  }
  EXPECT_EQ(seen_k.size(), 2u);  // ids 1 and 2 only
  EXPECT_TRUE(seen_k.count(1) && seen_k.count(2));
  EXPECT_EQ(seen_p.size(), 1u);  // p(1) = 0.64 >= 0.5 on its own
  EXPECT_EQ(seen_all.size(), 4u);
  // Frequencies follow the softmax: p(1) / p(2) = e.
  EXPECT_NEAR(static_cast<double>(seen_all[1]) / seen_all[2], std::exp(1.0), 0.4);
}

TEST(Sampling, SameSeedSameSamples) {
  const Tensor logits = from_data<float>({0.1f, 0.2f, 0.3f, 0.4f, 0.5f});
  Generator a(7), b(7);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits, {}, a), sample_token(logits, {}, b));
}

TEST(Generate, GreedyGenerationMatchesRepeatedFullForwards) {
  ModelConfig c{.arch = Arch::llama, .layers = 2, .heads = 2, .dim = 16, .vocab = 23, .context = 12};
  auto model = make_model(c);
  model->init_weights(3);
  Generator gen(0);
  const std::vector<int64_t> prompt{4, 8, 15};
  const std::vector<int64_t> out = generate(*model, prompt, 20, {.temperature = 0}, gen);
  ASSERT_EQ(out.size(), 20u);
  EXPECT_TRUE(model->is_training());  // generate restores the mode it found
  // Without a cache, with the same sliding window, greedy decoding picks the same tokens.
  NoGradGuard no_grad;
  model->eval();
  std::vector<int64_t> all = prompt;
  for (size_t i = 0; i < 9; ++i) {  // the first tokens fit in the context: plain full forwards
    const Tensor logits = model->forward(from_data<int64_t>(all, {1, static_cast<int64_t>(all.size())}));
    all.push_back(argmax(logits.select(0, 0).select(0, logits.size(1) - 1), 0).item<int64_t>());
    EXPECT_EQ(all.back(), out[i]) << "token " << i;
  }
}

#include <gtest/gtest.h>
#include <tsumugi/train/config.h>

using namespace tsumugi;

namespace {

std::string error_of(const std::string& toml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(toml, "recipe.toml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(Config, ReadsSectionsAndKeepsDefaults) {
  const TrainConfig c = parse_config(R"(
[model]
arch = "llama"
layers = 6
kv_heads = 2
[train]
lr = 3e-4
schedule = "wsd"
[parallel]
deterministic = true
)", "recipe.toml");
  EXPECT_EQ(c.model.arch, Arch::llama);
  EXPECT_EQ(c.model.layers, 6);
  EXPECT_EQ(c.model.kv_heads, 2);
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.schedule, "wsd");
  EXPECT_TRUE(c.parallel.deterministic);
  EXPECT_EQ(c.train.global_batch, TrainConfig().train.global_batch);  // untouched default
}

TEST(Config, OverridesAnyKey) {
  const TrainConfig c = parse_config("[train]\nlr = 1.0e-3\n", "recipe.toml",
                                     {"train.lr=3e-4", "eval.prompt=吾輩は", "model.tied_embeddings=false",
                                      "train.steps=7", "checkpoint.dir=\"runs/x\""});
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.eval.prompt, "吾輩は");
  EXPECT_FALSE(c.model.tied_embeddings);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.checkpoint.dir, "runs/x");
}

TEST(Config, UnknownKeysNameTheKeyAndSuggestTheClosest) {
  EXPECT_TRUE(contains(error_of("[train]\nlearnig_rate = 1.0\n"), "train.learnig_rate")) << error_of("[train]\nlearnig_rate = 1.0\n");
  EXPECT_TRUE(contains(error_of("[trian]\nlr = 1.0\n"), "did you mean 'train.lr'?")) << error_of("[trian]\nlr = 1.0\n");
  EXPECT_TRUE(contains(error_of("[train]\nwarmup = 10\n"), "did you mean 'train.warmup_steps'?"));
  EXPECT_TRUE(contains(error_of("", {"model.layer=3"}), "did you mean 'model.layers'?"));
  EXPECT_TRUE(contains(error_of("lr = 1.0\n"), "did you mean 'train.lr'?"));
}

TEST(Config, BadValuesNameTheKey) {
  EXPECT_TRUE(contains(error_of("[train]\nsteps = \"many\"\n"), "train.steps must be an int, got \"many\""));
  EXPECT_TRUE(contains(error_of("[train]\nschedule = \"cosin\"\n"), "train.schedule = \"cosin\" is not one of"));
  EXPECT_TRUE(contains(error_of("[train]\nglobal_batch = 10\nmicro_batch = 4\n"), "train.global_batch"));
  EXPECT_TRUE(contains(error_of("[model]\ndim = 100\nheads = 3\n"), "divisible"));
  EXPECT_TRUE(contains(error_of("[data]\nseq_len = 4096\n"), "data.seq_len"));
  EXPECT_TRUE(contains(error_of("", {"train.lr=fast"}), "is not a valid float"));
  EXPECT_TRUE(contains(error_of("", {"train.lr"}), "section.key=value"));
  EXPECT_TRUE(contains(error_of("[train\nlr = 1\n"), "recipe.toml:1"));
  EXPECT_TRUE(contains(error_of("[precision]\ncompute = \"bf16\"\n"), "precision.compute"));
}

TEST(Config, EffectiveConfigRoundTrips) {
  const TrainConfig c = parse_config("[model]\narch = \"llama\"\n[eval]\nprompt = \"東京は\"\n", "a.toml", {"train.lr=2.5e-4"});
  const std::string text = config_to_toml(c);
  EXPECT_TRUE(contains(text, "[train]\n"));
  EXPECT_TRUE(contains(text, "lr = 0.00025  # peak learning rate"));
  const TrainConfig again = parse_config(text, "effective.toml");
  EXPECT_EQ(config_to_toml(again), text);
  EXPECT_EQ(again.model.arch, Arch::llama);
  EXPECT_EQ(again.eval.prompt, "東京は");
  EXPECT_EQ(config_keys().size(), static_cast<size_t>(std::count(text.begin(), text.end(), '#')));
}

TEST(Config, EveryShippedRecipeIsValid) {
  for (const char* name : {"ja-gpt2-tiny", "ja-gpt2-124m", "ja-llama-1b", "ja-llama-8b"}) {
    const std::string path = std::string(TSUMUGI_SOURCE_DIR) + "/configs/" + name + ".toml";
    EXPECT_NO_THROW(load_config(path)) << path;
  }
  const TrainConfig tiny = load_config(std::string(TSUMUGI_SOURCE_DIR) + "/configs/ja-gpt2-tiny.toml");
  EXPECT_EQ(tiny.model.layers, 2);
  EXPECT_EQ(tiny.checkpoint.dir, "runs/ja-gpt2-tiny");
}

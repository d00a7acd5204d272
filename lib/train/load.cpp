#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/trainer.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tsumugi {
namespace fs = std::filesystem;

TrainedModel load_trained_model(const std::string& path, const std::string& tokenizer_path) {
  const Checkpoint checkpoint = load_checkpoint(path);
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(checkpoint.trainer_json);
  } catch (const nlohmann::json::exception& e) {
    TSU_FAIL(IOError, "[checkpoint] {}/trainer.json: {}", checkpoint.dir, e.what());
  }
  TSU_CHECK(state.contains("config") && state["config"].is_string(), IOError, "[checkpoint] {}/trainer.json has no recipe",
            checkpoint.dir);
  TrainConfig config = parse_config(state["config"].get<std::string>(), checkpoint.dir + "/trainer.json");
  const fs::path run_dir = fs::path(checkpoint.dir).parent_path().parent_path();
  std::string tok_path = tokenizer_path;
  if (tok_path.empty()) tok_path = fs::exists(run_dir / "tokenizer.model") ? (run_dir / "tokenizer.model").string()
                                                                          : config.data.tokenizer;
  Tokenizer tokenizer = Tokenizer::load(tok_path);
  const std::string expected = state.value("tokenizer_sha256", "");
  TSU_CHECK(expected.empty() || expected == tokenizer.sha256(), IOError,
            "[checkpoint] {} is not the tokenizer {} was trained with (SHA-256 {} != {})", tok_path, checkpoint.dir,
            tokenizer.sha256(), expected);
  if (config.model.vocab == 0) config.model.vocab = tokenizer.vocab_size();
  auto model = make_model(config.model);
  model->load_state_dict(checkpoint.model);
  model->eval();
  return {model, config, tokenizer, checkpoint.dir, checkpoint.step};
}

}  // namespace tsumugi

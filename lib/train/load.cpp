#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/trainer.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tsumugi {
namespace fs = std::filesystem;

TrainedModel load_trained_model(const std::string& path, const std::string& tokenizer_path) {
  const Checkpoint checkpoint = load_checkpoint(path);
  const std::string state_path = checkpoint.dir + "/trainer.json";
  const nlohmann::json state = nlohmann::json::parse(checkpoint.trainer_json);  // parsed once already
  TSU_CHECK(state.contains("config") && state.at("config").is_string(), IOError, "[checkpoint] {} has no recipe",
            state_path);
  const auto sha = state.find("tokenizer_sha256");
  TSU_CHECK(sha == state.end() || sha->is_string(), IOError, "[checkpoint] {}: tokenizer_sha256 is not a string",
            state_path);
  const std::string expected = sha == state.end() ? "" : sha->get<std::string>();
  TrainConfig config = parse_config(state.at("config").get<std::string>(), state_path);
  const fs::path run_dir = fs::path(checkpoint.dir).parent_path().parent_path();
  std::string tok_path = tokenizer_path;
  if (tok_path.empty()) tok_path = fs::exists(run_dir / "tokenizer.model") ? (run_dir / "tokenizer.model").string()
                                                                          : config.data.tokenizer;
  Tokenizer tokenizer = Tokenizer::load(tok_path);
  TSU_CHECK(expected.empty() || expected == tokenizer.sha256(), IOError,
            "[checkpoint] {} is not the tokenizer {} was trained with (SHA-256 {} != {})", tok_path, checkpoint.dir,
            tokenizer.sha256(), expected);
  if (config.model.vocab == 0) config.model.vocab = tokenizer.vocab_size();
  // The recipe's [model] section must describe the weights before a model of its size is built.
  int64_t weights = 0;
  for (const auto& [name, tensor] : checkpoint.model) weights += tensor.numel();
  const ModelConfig& m = config.model;
  const int64_t expected_weights = m.num_parameters();
  const bool extra_head = m.tied_embeddings && checkpoint.model.count("lm_head.weight");  // accepted, dropped
  TSU_CHECK(weights == expected_weights + (extra_head ? m.vocab * m.dim : 0), IOError,
            "[checkpoint] {}/model.safetensors holds {} weights but the [model] section of {} describes {}",
            checkpoint.dir, weights, state_path, expected_weights);
  auto model = make_model(config.model);
  model->load_state_dict(checkpoint.model);
  model->eval();
  return {model, config, tokenizer, checkpoint.dir, checkpoint.step};
}

}  // namespace tsumugi

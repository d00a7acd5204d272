#include <tsumugi/core/safetensors.h>
#include <tsumugi/tokenizer/tokenizer.h>
#include <tsumugi/train/export.h>
#include <tsumugi/train/trainer.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace tsumugi {
namespace fs = std::filesystem;
namespace {

void write_json(const std::string& path, const nlohmann::ordered_json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  TSU_CHECK(out.good(), IOError, "[export] cannot write {}", path);
}

nlohmann::ordered_json model_config_json(const ModelConfig& m, const Tokenizer& tok) {
  nlohmann::ordered_json j;
  if (m.arch == Arch::gpt2) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["vocab_size"] = m.vocab;
    j["n_positions"] = m.context;
    j["n_embd"] = m.dim;
    j["n_layer"] = m.layers;
    j["n_head"] = m.heads;
    j["n_inner"] = m.ffn_dim;
    j["activation_function"] = "gelu_new";
    j["layer_norm_epsilon"] = m.norm_eps;
    j["resid_pdrop"] = m.dropout;
    j["embd_pdrop"] = m.dropout;
    j["attn_pdrop"] = 0.0;
    j["scale_attn_weights"] = true;
  } else {
    j["architectures"] = {"LlamaForCausalLM"};
    j["model_type"] = "llama";
    j["vocab_size"] = m.vocab;
    j["hidden_size"] = m.dim;
    j["intermediate_size"] = m.ffn_dim;
    j["num_hidden_layers"] = m.layers;
    j["num_attention_heads"] = m.heads;
    j["num_key_value_heads"] = m.kv_heads;
    j["head_dim"] = m.head_dim();
    j["max_position_embeddings"] = m.context;
    j["rms_norm_eps"] = m.norm_eps;
    j["rope_theta"] = m.rope_theta;
    j["rope_scaling"] = nullptr;
    j["hidden_act"] = "silu";
    j["attention_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  j["initializer_range"] = m.init_std;
  j["tie_word_embeddings"] = m.tied_embeddings;
  if (tok.bos_id() >= 0) j["bos_token_id"] = tok.bos_id();
  j["eos_token_id"] = tok.eos_id();
  j["use_cache"] = true;
  j["torch_dtype"] = "float32";
  return j;
}

}  // namespace

void export_hf(const std::string& checkpoint_path, const std::string& out_dir) {
  const TrainedModel trained = load_trained_model(checkpoint_path);
  const ModelConfig& model = trained.model->config();
  const Tokenizer& tokenizer = trained.tokenizer;
  const TrainConfig& config = trained.config;
  fs::create_directories(out_dir);
  write_json(out_dir + "/config.json", model_config_json(model, tokenizer));
  save_safetensors(out_dir + "/model.safetensors", trained.model->state_dict(), {{"format", "pt"}});
  nlohmann::ordered_json generation = {{"do_sample", true},
                                       {"temperature", config.eval.temperature},
                                       {"top_k", config.eval.top_k},
                                       {"top_p", config.eval.top_p},
                                       {"eos_token_id", tokenizer.eos_id()}};
  if (tokenizer.bos_id() >= 0) generation["bos_token_id"] = tokenizer.bos_id();
  write_json(out_dir + "/generation_config.json", generation);
  {
    std::ofstream out(out_dir + "/tokenizer.model", std::ios::binary);
    out << tokenizer.model_bytes();
    TSU_CHECK(out.good(), IOError, "[export] cannot write {}/tokenizer.model", out_dir);
  }
  // LlamaTokenizer wraps any SentencePiece model; "legacy" keeps SentencePiece's own handling of
  // the leading space, which is how tsumugi encoded the training data. No BOS is added: the
  // training stream has none (documents end with EOS).
  nlohmann::ordered_json special = {{"eos_token", tokenizer.piece(tokenizer.eos_id())},
                                    {"unk_token", tokenizer.piece(tokenizer.unk_id())}};
  if (tokenizer.bos_id() >= 0) special["bos_token"] = tokenizer.piece(tokenizer.bos_id());
  nlohmann::ordered_json tokenizer_config = special;
  tokenizer_config["tokenizer_class"] = "LlamaTokenizer";
  tokenizer_config["model_max_length"] = model.context;
  tokenizer_config["add_bos_token"] = false;
  tokenizer_config["add_eos_token"] = false;
  tokenizer_config["legacy"] = true;
  tokenizer_config["clean_up_tokenization_spaces"] = false;
  write_json(out_dir + "/tokenizer_config.json", tokenizer_config);
  write_json(out_dir + "/special_tokens_map.json", special);
}

}  // namespace tsumugi

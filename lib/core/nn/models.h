#pragma once
// Internal: the GPT-2 and Llama module trees.
#include <tsumugi/core/nn/transformer.h>

namespace tsumugi {

/// Checks ids (B, T) against the config and the cache.
void check_ids(const Tensor& ids, const ModelConfig& config, const KVCache* cache);
/// Appends this step's keys and values (B, T, Hkv, hd) to the cache; returns all of them.
std::pair<Tensor, Tensor> extend_cache(KVCache* cache, size_t layer, const Tensor& k, const Tensor& v);

class GPT2Attention : public Module {
 public:
  explicit GPT2Attention(const ModelConfig& c);
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer) const;  // (B, T, D)
  std::shared_ptr<Conv1D> c_attn, c_proj;  // (D, 3D), (D, D)
  int64_t heads, head_dim;
};

class GPT2MLP : public Module {
 public:
  explicit GPT2MLP(const ModelConfig& c);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Conv1D> c_fc, c_proj;  // (D, F), (F, D)
};

class GPT2Block : public Module {
 public:
  explicit GPT2Block(const ModelConfig& c);
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<GPT2Attention> attn;
  std::shared_ptr<GPT2MLP> mlp;
};

class GPT2Transformer : public Module {
 public:
  explicit GPT2Transformer(const ModelConfig& c);
  std::shared_ptr<Embedding> wte, wpe;  // (V, D), (context, D)
  std::shared_ptr<ModuleList<GPT2Block>> h;
  std::shared_ptr<LayerNorm> ln_f;
};

/// GPT2LMHeadModel: transformer.{wte, wpe, h.N, ln_f}; lm_head tied to wte unless configured not to.
class GPT2 : public CausalLM {
 public:
  explicit GPT2(const ModelConfig& c);
  Tensor embed(const Tensor& ids, int64_t start = 0) override;
  Tensor blocks(Tensor x, int64_t begin, int64_t end, KVCache* cache = nullptr, int64_t start = 0) override;
  Tensor head(const Tensor& x) override;
  std::shared_ptr<GPT2Transformer> transformer;
  std::shared_ptr<Linear> lm_head;  // only when not tied

 protected:
  std::string_view block_prefix() const override { return "transformer.h."; }
};

class LlamaAttention : public Module {
 public:
  explicit LlamaAttention(const ModelConfig& c);
  Tensor forward(const Tensor& x, KVCache* cache, size_t layer, int64_t position) const;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;  // (Hq hd, D), (Hkv hd, D) x 2, (D, Hq hd)
  int64_t heads, kv_heads, head_dim;
  double rope_theta;
};

class LlamaMLP : public Module {
 public:
  explicit LlamaMLP(const ModelConfig& c);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;  // (F, D), (F, D), (D, F)
};

class LlamaDecoderLayer : public Module {
 public:
  explicit LlamaDecoderLayer(const ModelConfig& c);
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
};

class LlamaBody : public Module {
 public:
  explicit LlamaBody(const ModelConfig& c);
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<LlamaDecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;
};

/// LlamaForCausalLM: model.{embed_tokens, layers.N, norm}, lm_head unless tied.
class Llama : public CausalLM {
 public:
  explicit Llama(const ModelConfig& c);
  Tensor embed(const Tensor& ids, int64_t start = 0) override;
  Tensor blocks(Tensor x, int64_t begin, int64_t end, KVCache* cache = nullptr, int64_t start = 0) override;
  Tensor head(const Tensor& x) override;
  std::shared_ptr<LlamaBody> model;
  std::shared_ptr<Linear> lm_head;  // only when not tied

 protected:
  std::string_view block_prefix() const override { return "model.layers."; }
};

}  // namespace tsumugi

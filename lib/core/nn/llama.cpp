// Llama (Touvron et al. 2023) as Hugging Face's LlamaForCausalLM computes it: RMSNorm, rotary
// embeddings in the rotate-half form, SwiGLU, grouped-query attention, no biases.
#include <tsumugi/core/ops.h>

#include "models.h"

namespace tsumugi {

LlamaAttention::LlamaAttention(const ModelConfig& c)
    : heads(c.heads), kv_heads(c.kv_heads), head_dim(c.head_dim()), rope_theta(c.rope_theta) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.dim, heads * head_dim, false));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.dim, kv_heads * head_dim, false));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.dim, kv_heads * head_dim, false));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads * head_dim, c.dim, false));
}

Tensor LlamaAttention::forward(const Tensor& x, KVCache* cache, size_t layer, int64_t position) const {
  const int64_t batch = x.size(0), length = x.size(1);
  const Tensor q = rope(q_proj->forward(x).view({batch, length, heads, head_dim}), rope_theta, position);
  const Tensor k_new = rope(k_proj->forward(x).view({batch, length, kv_heads, head_dim}), rope_theta, position);
  const Tensor v_new = v_proj->forward(x).view({batch, length, kv_heads, head_dim});
  auto [k, v] = extend_cache(cache, layer, k_new, v_new);
  const Tensor y = causal_attention(q, k, v);  // (B, T, Hq, hd)
  return o_proj->forward(y.view({batch, length, heads * head_dim}));
}

LlamaMLP::LlamaMLP(const ModelConfig& c) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.dim, c.ffn_dim, false));
  up_proj = register_module("up_proj", std::make_shared<Linear>(c.dim, c.ffn_dim, false));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.ffn_dim, c.dim, false));
}

Tensor LlamaMLP::forward(const Tensor& x) const {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

LlamaDecoderLayer::LlamaDecoderLayer(const ModelConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(c.dim, c.norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.dim, c.norm_eps));
}

LlamaBody::LlamaBody(const ModelConfig& c) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab, c.dim));
  layers = register_module("layers", std::make_shared<ModuleList<LlamaDecoderLayer>>());
  for (int64_t i = 0; i < c.layers; ++i) layers->push_back(std::make_shared<LlamaDecoderLayer>(c));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.dim, c.norm_eps));
}

Llama::Llama(const ModelConfig& c) : CausalLM(c) {
  model = register_module("model", std::make_shared<LlamaBody>(config_));
  if (!config_.tied_embeddings)
    lm_head = register_module("lm_head", std::make_shared<Linear>(config_.dim, config_.vocab, false));
}

Tensor Llama::embed(const Tensor& ids, int64_t) {
  return dropout(model->embed_tokens->forward(ids), is_training() ? config_.dropout : 0.0, dropout_gen_);
}

Tensor Llama::blocks(Tensor x, int64_t begin, int64_t end, KVCache* cache, int64_t start) {
  const double p = is_training() ? config_.dropout : 0.0;
  for (int64_t i = begin; i < end; ++i) {
    LlamaDecoderLayer& layer = (*model->layers)[static_cast<size_t>(i)];
    x = x + dropout(layer.self_attn->forward(layer.input_layernorm->forward(x), cache, static_cast<size_t>(i), start), p,
                    dropout_gen_);
    x = x + dropout(layer.mlp->forward(layer.post_attention_layernorm->forward(x)), p, dropout_gen_);
  }
  return x;
}

Tensor Llama::head(const Tensor& x) {
  return linear(model->norm->forward(x), config_.tied_embeddings ? model->embed_tokens->weight : lm_head->weight);
}

}  // namespace tsumugi

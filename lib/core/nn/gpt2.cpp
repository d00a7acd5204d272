// GPT-2 (Radford et al. 2019) as Hugging Face's GPT2LMHeadModel computes it.
#include <tsumugi/core/ops.h>

#include "models.h"

namespace tsumugi {

GPT2Attention::GPT2Attention(const ModelConfig& c) : heads(c.heads), head_dim(c.head_dim()) {
  c_attn = register_module("c_attn", std::make_shared<Conv1D>(c.dim, 3 * c.dim));
  c_proj = register_module("c_proj", std::make_shared<Conv1D>(c.dim, c.dim));
}

Tensor GPT2Attention::forward(const Tensor& x, KVCache* cache, size_t layer) const {
  const int64_t batch = x.size(0), length = x.size(1), dim = heads * head_dim;
  const std::vector<Tensor> qkv = split(c_attn->forward(x), {dim, dim, dim}, -1);  // 3 x (B, T, D)
  const Shape heads_shape{batch, length, heads, head_dim};
  auto [k, v] = extend_cache(cache, layer, qkv[1].view(heads_shape), qkv[2].view(heads_shape));
  const Tensor y = causal_attention(qkv[0].view(heads_shape), k, v);  // (B, T, H, hd)
  return c_proj->forward(y.view({batch, length, dim}));
}

GPT2MLP::GPT2MLP(const ModelConfig& c) {
  c_fc = register_module("c_fc", std::make_shared<Conv1D>(c.dim, c.ffn_dim));
  c_proj = register_module("c_proj", std::make_shared<Conv1D>(c.ffn_dim, c.dim));
}

Tensor GPT2MLP::forward(const Tensor& x) const { return c_proj->forward(gelu(c_fc->forward(x))); }

GPT2Block::GPT2Block(const ModelConfig& c) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.dim, c.norm_eps));
  attn = register_module("attn", std::make_shared<GPT2Attention>(c));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.dim, c.norm_eps));
  mlp = register_module("mlp", std::make_shared<GPT2MLP>(c));
}

GPT2Transformer::GPT2Transformer(const ModelConfig& c) {
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab, c.dim));
  wpe = register_module("wpe", std::make_shared<Embedding>(c.context, c.dim));
  h = register_module("h", std::make_shared<ModuleList<GPT2Block>>());
  for (int64_t i = 0; i < c.layers; ++i) h->push_back(std::make_shared<GPT2Block>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.dim, c.norm_eps));
}

GPT2::GPT2(const ModelConfig& c) : CausalLM(c) {
  transformer = register_module("transformer", std::make_shared<GPT2Transformer>(config_));
  if (!config_.tied_embeddings)
    lm_head = register_module("lm_head", std::make_shared<Linear>(config_.dim, config_.vocab, false));
}

Tensor GPT2::embed(const Tensor& ids, int64_t start) {
  const Tensor positions = arange(start, start + ids.size(1), 1.0, {.dtype = DType::i64, .device = ids.device()});
  return dropout(transformer->wte->forward(ids) + transformer->wpe->forward(positions),
                 is_training() ? config_.dropout : 0.0, dropout_gen_);
}

Tensor GPT2::blocks(Tensor x, int64_t begin, int64_t end, KVCache* cache, int64_t) {
  const double p = is_training() ? config_.dropout : 0.0;
  for (int64_t i = begin; i < end; ++i) {
    GPT2Block& block = (*transformer->h)[static_cast<size_t>(i)];
    x = x + dropout(block.attn->forward(block.ln_1->forward(x), cache, static_cast<size_t>(i)), p, dropout_gen_);
    x = x + dropout(block.mlp->forward(block.ln_2->forward(x)), p, dropout_gen_);
  }
  return x;
}

Tensor GPT2::head(const Tensor& x) {
  return linear(transformer->ln_f->forward(x), config_.tied_embeddings ? transformer->wte->weight : lm_head->weight);
}

}  // namespace tsumugi

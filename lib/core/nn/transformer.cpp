// What GPT-2 and Llama share: config, initialisation, FLOP accounting, loading, the factory.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/core/ops.h>

#include <cmath>
#include <limits>

#include "../check.h"
#include "models.h"

namespace tsumugi {

std::string_view arch_name(Arch arch) { return arch == Arch::gpt2 ? "gpt2" : "llama"; }

Arch parse_arch(std::string_view name) {
  if (name == "gpt2") return Arch::gpt2;
  if (name == "llama") return Arch::llama;
  TSU_FAIL(ValueError, "[model] unknown architecture '{}' (expected gpt2 or llama)", name);
}

ModelConfig ModelConfig::resolved() const {
  ModelConfig c = *this;
  TSU_CHECK(c.layers > 0 && c.heads > 0 && c.dim > 0 && c.vocab > 0 && c.context > 0, ValueError,
            "[model] layers, heads, dim, vocab and context must be positive");
  // Recipes and checkpoints come from files: bound every size before anything multiplies them.
  constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();
  for (const auto& [name, value] : {std::pair{"layers", c.layers}, {"heads", c.heads}, {"kv_heads", c.kv_heads},
                                    {"dim", c.dim}, {"ffn_dim", c.ffn_dim}, {"vocab", c.vocab}, {"context", c.context}}) {
    TSU_CHECK(value >= 0 && value <= kMaxSize, ValueError, "[model] {} = {} is outside [0, {}]", name, value, kMaxSize);
  }
  TSU_CHECK(c.dim % c.heads == 0, ValueError, "[model] dim {} is not divisible by heads {}", c.dim, c.heads);
  if (c.kv_heads == 0) c.kv_heads = c.heads;
  TSU_CHECK(c.kv_heads > 0 && c.heads % c.kv_heads == 0, ValueError,
            "[model] heads {} is not a multiple of kv_heads {}", c.heads, c.kv_heads);
  TSU_CHECK(c.arch == Arch::llama || c.kv_heads == c.heads, ValueError,
            "[model] gpt2 has no grouped-query attention: kv_heads must equal heads");
  TSU_CHECK(c.arch == Arch::gpt2 || c.head_dim() % 2 == 0, ValueError, "[model] rotary embedding needs an even head_dim");
  if (c.ffn_dim == 0) {
    // GPT-2: 4 D. Llama: 2/3 of 4 D rounded up to a multiple of 256 (Meta's rule).
    c.ffn_dim = c.arch == Arch::gpt2 ? 4 * c.dim : (8 * c.dim / 3 + 255) / 256 * 256;
  }
  TSU_CHECK(c.norm_eps > 0 && c.init_std > 0 && c.rope_theta > 0, ValueError,
            "[model] norm_eps, init_std and rope_theta must be positive");
  TSU_CHECK(c.dropout >= 0 && c.dropout < 1, ValueError, "[model] dropout must be in [0, 1)");
  return c;
}

int64_t ModelConfig::num_parameters() const {
  const ModelConfig c = resolved();
  // In double: a recipe may describe more parameters than an int64 holds.
  const double D = static_cast<double>(c.dim), F = static_cast<double>(c.ffn_dim), V = static_cast<double>(c.vocab);
  double per_layer, outside;
  if (c.arch == Arch::gpt2) {
    // c_attn, attn.c_proj, c_fc, mlp.c_proj (Conv1D with biases), ln_1, ln_2.
    per_layer = (D * 3 * D + 3 * D) + (D * D + D) + (D * F + F) + (F * D + D) + 4 * D;
    outside = V * D + static_cast<double>(c.context) * D + 2 * D;  // wte, wpe, ln_f
  } else {
    const double q = static_cast<double>(c.heads * c.head_dim()), kv = static_cast<double>(c.kv_heads * c.head_dim());
    per_layer = D * q + 2 * D * kv + q * D + 3 * D * F + 2 * D;  // q, k, v, o, gate, up, down, 2 RMSNorm
    outside = V * D + D;                                          // embed_tokens, norm
  }
  if (!c.tied_embeddings) outside += V * D;  // lm_head
  const double total = static_cast<double>(c.layers) * per_layer + outside;
  TSU_CHECK(total < 9.0e18, ValueError, "[model] {:.3g} parameters do not fit in int64", total);
  return static_cast<int64_t>(total);
}

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_embedding(const std::string& name) {
  return ends_with(name, "wte.weight") || ends_with(name, "wpe.weight") || ends_with(name, "embed_tokens.weight");
}

bool is_residual_projection(const std::string& name) {
  return ends_with(name, "attn.c_proj.weight") || ends_with(name, "mlp.c_proj.weight") ||
         ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight");
}

}  // namespace

Tensor CausalLM::forward(const Tensor& ids, KVCache* cache) {
  check_ids(ids, config_, cache);
  const int64_t start = cache ? cache->length : 0;
  const Tensor x = blocks(embed(ids, start), 0, config_.layers, cache, start);
  if (cache) cache->length += ids.size(1);
  return head(x);
}

int64_t CausalLM::parameter_piece(const std::string& name) const {
  const std::string_view prefix = block_prefix();
  if (name.starts_with(prefix)) {
    const std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    int64_t layer = -1;
    try {
      layer = std::stoll(rest.substr(0, dot));
    } catch (const std::exception&) {
    }
    TSU_CHECK(layer >= 0 && layer < config_.layers && dot != std::string::npos, ValueError,
              "[parameter_piece] '{}' names no block of this {}-layer model", name, config_.layers);
    return layer;
  }
  if (is_embedding(name)) return -1;
  TSU_CHECK(state_dict().count(name) == 1, ValueError, "[parameter_piece] the model has no parameter '{}'", name);
  return config_.layers;  // the final norm and an untied head
}

Device CausalLM::device() const {
  const std::vector<Tensor> params = parameters();
  return params.empty() ? Device::cpu() : params.front().device();
}

void CausalLM::init_weights(uint64_t seed) {
  NoGradGuard no_grad;
  const double residual_std = config_.init_std / std::sqrt(2.0 * static_cast<double>(config_.layers));
  for (auto& [name, param] : named_parameters()) {
    if (ends_with(name, "bias")) {
      param.zero_();
    } else if (param.dim() == 1) {  // norm weights
      param.fill_(1.0);
    } else {
      Generator gen = Generator::for_name(seed, name);
      normal_(param, gen, 0.0, is_residual_projection(name) ? residual_std : config_.init_std);
    }
  }
}

int64_t CausalLM::num_matmul_parameters() const {
  int64_t n = 0;
  for (const auto& [name, param] : named_parameters())
    if (param.dim() == 2 && !is_embedding(name)) n += param.numel();
  if (config_.tied_embeddings) n += config_.vocab * config_.dim;  // the head is the embedding
  return n;
}

double CausalLM::flops_per_token(int64_t seq_len) const {
  return 6.0 * static_cast<double>(num_matmul_parameters()) +
         12.0 * static_cast<double>(config_.layers * seq_len * config_.dim);
}

void CausalLM::load_state_dict(const StateDict& state, bool strict) {
  if (config_.tied_embeddings && state.count("lm_head.weight")) {
    StateDict without = state;
    without.erase("lm_head.weight");
    Module::load_state_dict(without, strict);
    return;
  }
  Module::load_state_dict(state, strict);
}

std::shared_ptr<CausalLM> make_model(const ModelConfig& config) {
  const ModelConfig c = config.resolved();
  if (c.arch == Arch::gpt2) return std::make_shared<GPT2>(c);
  return std::make_shared<Llama>(c);
}

void check_ids(const Tensor& ids, const ModelConfig& config, const KVCache* cache) {
  TSU_CHECK(ids.dim() == 2, ValueError, "[model] ids must be (batch, seq), got {}", shape_str(ids.shape()));
  TSU_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64 || ids.dtype() == DType::u16 || ids.dtype() == DType::u32,
            ValueError, "[model] ids must be integers, got {}", dtype_name(ids.dtype()));
  const int64_t start = cache ? cache->length : 0;
  TSU_CHECK(start + ids.size(1) <= config.context, ValueError,
            "[model] {} positions exceed the context length {}", start + ids.size(1), config.context);
  TSU_CHECK(!cache || cache->keys.empty() || static_cast<int64_t>(cache->keys.size()) == config.layers, ValueError,
            "[model] KV cache holds {} layers, model has {}", cache ? cache->keys.size() : 0, config.layers);
}

std::pair<Tensor, Tensor> extend_cache(KVCache* cache, size_t layer, const Tensor& k, const Tensor& v) {
  if (cache == nullptr) return {k, v};
  if (cache->keys.size() <= layer) {
    cache->keys.resize(layer + 1);
    cache->values.resize(layer + 1);
  }
  Tensor& ck = cache->keys[layer];
  Tensor& cv = cache->values[layer];
  ck = ck.defined() ? cat({ck, k}, 1) : k.contiguous();
  cv = cv.defined() ? cat({cv, v}, 1) : v.contiguous();
  return {ck, cv};
}

}  // namespace tsumugi

#pragma once
/// GPT-2 and Llama decoder-only language models, built from one config. Parameter names, layouts
/// and arithmetic follow Hugging Face transformers (GPT2LMHeadModel, LlamaForCausalLM), so
/// weights move between the two without conversion.
#include <tsumugi/core/nn/layers.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tsumugi {

enum class Arch { gpt2, llama };
std::string_view arch_name(Arch arch);
Arch parse_arch(std::string_view name);

/// One struct for both architectures.
struct ModelConfig {
  Arch arch = Arch::gpt2;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t kv_heads = 0;   ///< grouped-query key/value heads (0: same as heads; GPT-2 needs 0 or heads)
  int64_t dim = 768;      ///< model width
  int64_t ffn_dim = 0;    ///< MLP width (0: 4 * dim for GPT-2, the Llama rule otherwise)
  int64_t vocab = 32768;
  int64_t context = 1024; ///< longest sequence (GPT-2's position table size)
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tied_embeddings = true;  ///< output head shares the token embedding
  double init_std = 0.02;
  double dropout = 0.0;  ///< on embeddings and residual branches in training mode

  /// Fills the derived defaults (kv_heads, ffn_dim) and checks consistency and ranges (every
  /// size at most 2^31 - 1, so that sizes multiply without overflow); throws ValueError.
  ModelConfig resolved() const;
  /// Parameters of the model this config builds, counted without building it (a checkpoint's
  /// weights are checked against its recipe before anything is allocated). Throws like resolved().
  int64_t num_parameters() const;
  int64_t head_dim() const { return dim / heads; }
};

/// Keys and values of earlier positions for incremental decoding, per layer (B, S, Hkv, hd).
struct KVCache {
  std::vector<Tensor> keys, values;
  int64_t length = 0;  ///< positions held
};

/// A causal language model: token ids (B, T) -> logits (B, T, vocab).
class CausalLM : public Module {
 public:
  explicit CausalLM(const ModelConfig& config) : config_(config.resolved()) {}
  const ModelConfig& config() const { return config_; }
  /// Where the parameters live (the first parameter's device; the CPU for a model without any).
  Device device() const;
  /// Logits for ids (B, T) of an integer dtype. With a cache, the ids continue the cached
  /// positions and the cache grows by T. The same as head(blocks(embed(ids), 0, layers)).
  Tensor forward(const Tensor& ids, KVCache* cache = nullptr);

  /// The forward pass in three pieces, so that pipeline stages can each run theirs.
  /// The residual stream (B, T, D) of ids at positions start, start + 1, ... (dropout applied
  /// in training mode).
  virtual Tensor embed(const Tensor& ids, int64_t start = 0) = 0;
  /// Blocks [begin, end) applied to the residual stream x (B, T, D) at positions start, ...
  virtual Tensor blocks(Tensor x, int64_t begin, int64_t end, KVCache* cache = nullptr, int64_t start = 0) = 0;
  /// The final norm and the output projection: (B, T, D) -> logits (B, T, vocab).
  virtual Tensor head(const Tensor& x) = 0;
  /// Which piece uses the parameter `name`: -1 the embedding, 0 .. layers - 1 a block, layers
  /// the head. A tied output head is the embedding's (-1). Throws ValueError for an unknown name.
  int64_t parameter_piece(const std::string& name) const;
  /// Deterministic initialisation from a seed: each parameter from its own named stream.
  /// Weights normal(0, init_std); residual output projections scaled by 1/sqrt(2 * layers);
  /// biases 0; norm weights 1.
  void init_weights(uint64_t seed);
  /// Parameters that take part in a matrix product per token (the 6N of 6N + 12 L T D): every
  /// projection and the output head; the embedding lookups are not counted.
  int64_t num_matmul_parameters() const;
  /// Training FLOPs per token at sequence length T: 6 N + 12 L T D (forward and backward).
  double flops_per_token(int64_t seq_len) const;
  /// The generator behind dropout; its offset is part of a training run's state.
  Generator& dropout_generator() { return dropout_gen_; }
  /// Accepts a redundant "lm_head.weight" for tied models (some exporters write it).
  void load_state_dict(const StateDict& state, bool strict = true) override;

 protected:
  /// The prefix of block names ("transformer.h." or "model.layers.").
  virtual std::string_view block_prefix() const = 0;

  ModelConfig config_;
  Generator dropout_gen_{0x5eed};
};

/// Builds a GPT2 or Llama model (uninitialised weights: call init_weights or load_state_dict).
std::shared_ptr<CausalLM> make_model(const ModelConfig& config);

}  // namespace tsumugi

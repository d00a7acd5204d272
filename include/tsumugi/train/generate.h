#pragma once
/// Text generation from a causal language model: temperature, top-k and top-p (nucleus)
/// sampling with a seeded generator, and a KV cache so each new token costs one position.
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/core/random.h>
#include <tsumugi/dist/pipeline_stage.h>

#include <cstdint>
#include <vector>

namespace tsumugi {

struct SamplingOptions {
  double temperature = 0.8;  ///< 0: greedy (always the most likely token)
  int64_t top_k = 50;        ///< keep the k most likely tokens (0: all)
  double top_p = 0.95;       ///< keep the smallest set with this probability mass (1: all)
};

/// Draws a token id from logits (V) of a float dtype. Uses one uniform number from `gen`.
int64_t sample_token(const Tensor& logits, const SamplingOptions& options, Generator& gen);

/// Continues `prompt` by up to `max_new_tokens` tokens; stops after `stop_token` (if >= 0).
/// Returns only the new tokens. The model runs in evaluation mode without recording.
/// When the context fills, generation continues from the last half of the context.
std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop_token = -1);
/// The same through a pipeline: every stage calls it with the same arguments; each runs its own
/// blocks with its own cache (PipelineStage::decode), the last stage samples with `gen`, and
/// each token reaches every stage. The same tokens as generate() on the whole model.
std::vector<int64_t> generate(PipelineStage& stage, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop_token = -1);

}  // namespace tsumugi

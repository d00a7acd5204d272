#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/train/eval.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "core/check.h"

namespace tsumugi {

EvalResult evaluate(CausalLM& model, ValidationIterator& batches, const Tokenizer& tokenizer, int64_t max_batches,
                    ProcessGroup* group, PipelineStage* stage) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  batches.reset();
  double total_nats = 0;
  EvalResult result;
  for (int64_t n = 0; max_batches == 0 || n < max_batches; ++n) {
    std::optional<Batch> batch = batches.next();
    if (!batch) break;
    const Tensor targets = batch->targets.view({-1});
    const int64_t count = targets.numel();
    if (stage) {
      total_nats += stage->forward_loss_sum(batch->inputs, batch->targets);  // on the last stage
    } else {
      const Tensor logits = model.forward(batch->inputs.to(model.device()));
      // cross_entropy is a mean; times the count gives this batch's sum.
      total_nats += cross_entropy(logits.view({-1, logits.size(-1)}), targets.to(model.device())).item<double>() *
                    static_cast<double>(count);
    }
    result.tokens += count;
    const std::vector<int32_t> ids = targets.to_vector<int32_t>();
    result.bytes += tokenizer.byte_count(ids);
  }
  model.train(was_training);
  if (stage) {  // the sum lives on the last stage
    Tensor sum = from_data<double>({total_nats});
    stage->group().broadcast(sum, static_cast<int>(stage->stages() - 1));
    total_nats = sum.item<double>();
  }
  if (group != nullptr && group->size() > 1) {
    Tensor sums = from_data<double>({total_nats, static_cast<double>(result.tokens), static_cast<double>(result.bytes)});
    group->all_reduce(sums);
    const std::vector<double> s = sums.to_vector<double>();
    total_nats = s[0];
    result.tokens = static_cast<int64_t>(s[1]);
    result.bytes = static_cast<uint64_t>(s[2]);
  }
  TSU_CHECK(result.tokens > 0, ValueError, "[eval] the validation split holds no complete sequence");
  result.loss = total_nats / static_cast<double>(result.tokens);
  result.perplexity = std::exp(result.loss);
  result.bits_per_byte = result.bytes > 0 ? total_nats / std::numbers::ln2 / static_cast<double>(result.bytes) : 0.0;
  return result;
}

double unigram_bits_per_byte(const ShardSet& shards, const Tokenizer& tokenizer) {
  const uint64_t total = shards.total_tokens();
  TSU_CHECK(total > 0, ValueError, "[eval] empty split");
  std::vector<uint64_t> counts(static_cast<size_t>(tokenizer.vocab_size()), 0);
  std::vector<int32_t> buffer(1 << 20);
  for (uint64_t start = 0; start < total; start += buffer.size()) {
    const uint64_t n = std::min<uint64_t>(buffer.size(), total - start);
    shards.read_tokens(start, n, buffer.data());
    for (uint64_t i = 0; i < n; ++i) {
      TSU_CHECK(buffer[i] >= 0 && static_cast<size_t>(buffer[i]) < counts.size(), IndexError,
                "[eval] token {} of the split is id {}, outside the tokenizer's vocabulary of {}", start + i,
                static_cast<uint32_t>(buffer[i]), counts.size());
      ++counts[static_cast<size_t>(buffer[i])];
    }
  }
  double bits = 0;
  uint64_t bytes = 0;
  const std::vector<uint32_t>& token_bytes = tokenizer.token_bytes();
  for (size_t id = 0; id < counts.size(); ++id) {
    if (counts[id] == 0) continue;
    const double p = static_cast<double>(counts[id]) / static_cast<double>(total);
    bits -= static_cast<double>(counts[id]) * std::log2(p);
    bytes += counts[id] * token_bytes[id];
  }
  return bits / static_cast<double>(bytes);
}

}  // namespace tsumugi

#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/train/generate.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace tsumugi {

int64_t sample_token(const Tensor& logits_in, const SamplingOptions& options, Generator& gen) {
  TSU_CHECK(logits_in.dim() == 1 && logits_in.numel() > 0, ValueError, "[sample] logits must be (V), got {}",
            shape_str(logits_in.shape()));
  TSU_CHECK(options.temperature >= 0 && options.top_k >= 0 && options.top_p > 0 && options.top_p <= 1, ValueError,
            "[sample] need temperature >= 0, top_k >= 0 and 0 < top_p <= 1");
  const std::vector<double> logits = logits_in.to_vector<double>();
  const double u = rand({1}, gen, {.dtype = DType::f64}).item<double>();  // drawn even when greedy: same stream
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; ties by lower id, so the result does not depend on the sort.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  if (options.temperature == 0) return order[0];
  size_t keep = order.size();
  if (options.top_k > 0) keep = std::min(keep, static_cast<size_t>(options.top_k));
  std::vector<double> probs(keep);
  const double top = logits[order[0]];
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[order[i]] - top) / options.temperature);
  if (options.top_p < 1) {  // the smallest prefix whose mass reaches top_p
    double mass = 0;
    size_t n = 0;
    while (n < keep && mass < options.top_p * total) mass += probs[n++];
    keep = std::max<size_t>(n, 1);
    total = mass;
  }
  double target = u * total;
  for (size_t i = 0; i < keep; ++i) {
    if (target < probs[i]) return order[i];
    target -= probs[i];
  }
  return order[keep - 1];
}

namespace {

// The decoding loop: `next(ids, reset)` runs ids through the model (continuing its cache, or a
// fresh one when `reset`) and returns the token chosen after the last of them.
template <class Next>
std::vector<int64_t> decode_loop(const std::vector<int64_t>& prompt, int64_t max_new_tokens, int64_t context,
                                 int64_t stop_token, Next&& next) {
  TSU_CHECK(!prompt.empty(), ValueError, "[generate] the prompt is empty");
  std::vector<int64_t> all = prompt;
  std::vector<int64_t> generated;
  int64_t cached = 0;  // positions in the cache
  // Start from the end of the prompt that fits in the context.
  const size_t start = all.size() > static_cast<size_t>(context) ? all.size() - static_cast<size_t>(context) : 0;
  std::vector<int64_t> ids(all.begin() + static_cast<std::ptrdiff_t>(start), all.end());
  bool reset = true;
  for (int64_t i = 0; i < max_new_tokens; ++i) {
    const int64_t token = next(ids, reset);
    cached = (reset ? 0 : cached) + static_cast<int64_t>(ids.size());
    generated.push_back(token);
    all.push_back(token);
    if (token == stop_token || i + 1 == max_new_tokens) break;
    reset = cached >= context;  // full: restart from the last half of the context
    ids = reset ? std::vector<int64_t>(all.end() - context / 2, all.end()) : std::vector<int64_t>{token};
  }
  return generated;
}

}  // namespace

std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop_token) {
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  KVCache cache;
  const std::vector<int64_t> generated =
      decode_loop(prompt, max_new_tokens, model.config().context, stop_token, [&](const std::vector<int64_t>& ids, bool reset) {
        if (reset) cache = KVCache();
        Tensor logits = model.forward(
            from_data<int64_t>(ids, {1, static_cast<int64_t>(ids.size())}, {.dtype = DType::i64, .device = model.device()}),
            &cache);
        return sample_token(logits.select(0, 0).select(0, logits.size(1) - 1).to(Device::cpu()), options, gen);
      });
  model.train(was_training);
  return generated;
}

std::vector<int64_t> generate(PipelineStage& stage, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                              const SamplingOptions& options, Generator& gen, int64_t stop_token) {
  KVCache cache;  // this stage's layers
  const int last = static_cast<int>(stage.stages() - 1);
  return decode_loop(prompt, max_new_tokens, stage.context(), stop_token, [&](const std::vector<int64_t>& ids, bool reset) {
    if (reset) cache = KVCache();
    const Tensor logits = stage.decode(ids, cache);
    Tensor token = from_data<int64_t>({stage.is_last() ? sample_token(logits, options, gen) : 0});
    stage.group().broadcast(token, last);
    return token.item<int64_t>();
  });
}

}  // namespace tsumugi

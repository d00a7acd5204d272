#pragma once
/// Evaluation over a validation split: mean loss per token, perplexity, and bits per byte of
/// the text (tokenizer-independent: total loss in bits divided by the UTF-8 bytes the target
/// tokens stand for).
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/data/loader.h>
#include <tsumugi/dist/pipeline_stage.h>
#include <tsumugi/dist/process_group.h>
#include <tsumugi/tokenizer/tokenizer.h>

#include <cstdint>

namespace tsumugi {

struct EvalResult {
  double loss = 0;           ///< mean cross-entropy per target token, in nats
  double perplexity = 0;     ///< exp(loss)
  double bits_per_byte = 0;  ///< total loss / ln 2 / target bytes
  int64_t tokens = 0;        ///< target tokens evaluated
  uint64_t bytes = 0;        ///< UTF-8 bytes those tokens stand for
};

/// Runs the model over the iterator's batches (from its start; at most `max_batches`, 0 = all),
/// in evaluation mode without recording. Deterministic: the same model and split give the same
/// numbers. Sums are accumulated in double in batch order.
/// With a `group`, each rank evaluates its own iterator (made with its rank and world) and the
/// sums are all-reduced, so every rank returns the result over the whole split.
/// With a pipeline `stage`, every stage of the pipeline calls it with the same batches and the
/// batches go through the stages (PipelineStage::forward_loss_sum): the same numbers as the
/// whole model in one process, on every stage, while each holds only its piece.
EvalResult evaluate(CausalLM& model, ValidationIterator& batches, const Tokenizer& tokenizer, int64_t max_batches = 0,
                    ProcessGroup* group = nullptr, PipelineStage* stage = nullptr);

/// The unigram baseline of a split: the entropy of its token frequencies, in bits per byte
/// (what a model that ignores context can reach at best).
double unigram_bits_per_byte(const ShardSet& shards, const Tokenizer& tokenizer);

}  // namespace tsumugi

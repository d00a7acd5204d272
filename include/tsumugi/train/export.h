#pragma once
/// Export to a Hugging Face model directory, loadable by transformers without conversion code:
/// config.json (GPT2LMHeadModel or LlamaForCausalLM), model.safetensors, generation_config.json,
/// tokenizer.model (SentencePiece) and tokenizer_config.json / special_tokens_map.json.
#include <string>

namespace tsumugi {

/// Writes the model of `checkpoint` (a checkpoint or run directory) into `out_dir`. The
/// tokenizer is taken from the run directory (tokenizer.model, copied there by `tsumugi train`)
/// or else from the recipe's data.tokenizer; its SHA-256 must match the one the run trained with.
void export_hf(const std::string& checkpoint, const std::string& out_dir);

}  // namespace tsumugi

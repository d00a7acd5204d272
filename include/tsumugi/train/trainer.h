#pragma once
/// The training loop behind `tsumugi train`: model, data, AdamW with a schedule and clipping,
/// gradient accumulation, evaluation, samples, metrics and atomic checkpoints, with exact resume.
#include <tsumugi/train/config.h>
#include <tsumugi/train/eval.h>

#include <memory>
#include <optional>
#include <string>

namespace tsumugi {

/// How a run ended.
struct TrainOutcome {
  int64_t step = 0;              ///< optimizer steps completed
  bool finished = false;         ///< reached train.steps
  std::string stop_reason;       ///< "" when finished, else "signal", "time limit", ...
  std::string checkpoint;        ///< the last checkpoint written
  double loss = 0;               ///< training loss of the last step
  std::optional<EvalResult> eval;  ///< the last evaluation, if any
};

/// Runs a recipe. With `resume`, continues from the newest complete checkpoint in checkpoint.dir
/// if there is one (same model, same data order, same bits as an uninterrupted run). SIGINT and
/// SIGTERM finish the current step, save a checkpoint and return. Errors (bad data, a tokenizer
/// that does not match the shards, a full disk) throw tsumugi::Error subclasses.
TrainOutcome run_training(const TrainConfig& config, bool resume);

/// A trained model read back from a checkpoint, with its recipe and tokenizer.
struct TrainedModel {
  std::shared_ptr<CausalLM> model;
  TrainConfig config;  ///< the recipe it was trained with (model.vocab filled in)
  Tokenizer tokenizer;
  std::string dir;     ///< the checkpoint directory
  int64_t step = 0;
};

/// Loads the model of a checkpoint directory (or a run directory's latest checkpoint). The
/// tokenizer is `tokenizer_path` when given, else RUN/tokenizer.model, else the recipe's
/// data.tokenizer; it must be the one the model was trained with (SHA-256 checked).
TrainedModel load_trained_model(const std::string& checkpoint, const std::string& tokenizer_path = "");

/// Sustained matrix-product rate of `device` in GFLOP/s: the best of five square products (2048 f32 on
/// the CPU; 8192 in `dtype` on a GPU), the denominator of MFU (the best,
/// so that noise on a shared machine can only lower the reported MFU).
double measure_gemm_gflops(Device device = Device::cpu(), DType dtype = DType::f32);

}  // namespace tsumugi

#pragma once
/// Training recipes: TOML files with sections model, data, train, parallel, precision,
/// checkpoint, eval, log and device. Every key has a default and a description (config_keys());
/// any key can be overridden as "section.key=value". An unknown key or a bad value is a
/// ConfigError that names the key and suggests the closest valid one.
#include <tsumugi/core/error.h>
#include <tsumugi/core/nn/transformer.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tsumugi {

/// A recipe that cannot be used: unknown key, wrong type, value out of range.
class ConfigError : public Error {
 public:
  using Error::Error;
};

struct DataConfig {
  std::string train = "data/ja/shards/train";  ///< folder of training shards (with manifest.json)
  std::string valid = "data/ja/shards/val";    ///< folder of validation shards ("" for none)
  std::string tokenizer = "data/ja/tokenizer.model";  ///< SentencePiece model the shards were made with
  int64_t seq_len = 256;                       ///< tokens per training sequence
  uint64_t seed = 1234;                        ///< seed of the sample order
};

struct TrainSettings {
  int64_t steps = 1000;          ///< optimizer steps
  int64_t global_batch = 32;     ///< sequences per optimizer step, all ranks together
  int64_t micro_batch = 8;       ///< sequences per forward/backward on one rank
  double lr = 6e-4;              ///< peak learning rate
  double min_lr = 6e-5;          ///< learning rate at the end of the decay
  std::string schedule = "cosine";  ///< cosine | wsd | linear | constant (after warm-up)
  int64_t warmup_steps = 100;    ///< linear warm-up from 0
  double decay_fraction = 0.2;   ///< wsd: share of the steps spent in the final decay
  double weight_decay = 0.1;     ///< AdamW decoupled weight decay (2-D parameters only)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;        ///< clip the global gradient norm to this (0: off)
  double z_loss = 0.0;           ///< coefficient of mean(logsumexp^2)
  uint64_t seed = 0;             ///< weight initialisation seed
  double max_minutes = 0;        ///< stop (with a checkpoint) after this wall time (0: no limit)
  std::string on_nonfinite = "stop";  ///< non-finite loss or gradient: skip the step | stop (after saving)
  double spike_zscore = 0.0;     ///< a loss above mean + z * std of the recent window is a spike (0: off)
  int64_t spike_window = 100;    ///< accepted steps in that window
  std::string on_spike = "skip"; ///< a spike: skip the update | stop (after saving) | log only
};

struct ParallelConfig {
  int64_t dp = 0;                ///< data-parallel degree (0: world size / pp)
  int64_t pp = 1;                ///< pipeline stages
  std::string schedule = "1f1b"; ///< gpipe | 1f1b
  std::string stage_layers;      ///< blocks per pipeline stage, "6,6,4" ("": balanced by compute)
  int64_t zero = 0;              ///< 0: replicated optimizer state; 1: sharded (ZeRO-1)
  bool deterministic = false;    ///< bitwise-identical results for any dp, pp and micro-batch split
  int64_t threads = 0;           ///< CPU threads per rank (0: cores / local ranks)
  int64_t blas_threads = 0;      ///< BLAS threads per rank (0: same as threads; deterministic mode: 1)
  /// How data parallelism moves device tensors: "nccl" (one GPU per rank) or "mpi" (through host
  /// memory over MPI: ranks may share a GPU, NCCL is not needed; slower).
  std::string gpu_comm = "nccl";
};

struct PrecisionConfig {
  std::string compute = "f32";   ///< f32 | bf16 | f16 (bf16/f16: CUDA only; master weights stay f32)
};

struct CheckpointConfig {
  std::string dir = "runs/default";  ///< run directory: checkpoints, metrics.jsonl, config.toml
  int64_t every = 500;           ///< save every N steps (0: only at the end)
  int64_t keep = 3;              ///< keep the newest K checkpoints
};

struct EvalConfig {
  int64_t every = 250;           ///< evaluate on the validation split every N steps (0: only at the end)
  int64_t batches = 0;           ///< validation batches per evaluation (0: the whole split)
  int64_t sample_every = 500;    ///< print a generated sample every N steps (0: never)
  std::string prompt = "日本の";  ///< prompt of the samples
  int64_t sample_tokens = 48;    ///< tokens per sample
  double temperature = 0.8;
  int64_t top_k = 50;            ///< 0: off
  double top_p = 0.95;           ///< 1: off
};

struct LogConfig {
  int64_t every = 10;            ///< progress line every N steps
  std::string trace;             ///< Chrome trace of the first trace_steps steps ("": none)
  int64_t trace_steps = 3;       ///< steps the trace covers
};

struct DeviceConfig {
  std::string type = "cpu";      ///< cpu | cuda
};

/// A whole recipe.
struct TrainConfig {
  ModelConfig model;
  DataConfig data;
  TrainSettings train;
  ParallelConfig parallel;
  PrecisionConfig precision;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  LogConfig log;
  DeviceConfig device;
};

/// One recipe key: "train.lr", its type and description, for --help and error messages.
struct ConfigKey {
  std::string name;
  std::string type;  ///< "int", "float", "bool", "string"
  std::string help;
};
/// All keys, in recipe order.
std::vector<ConfigKey> config_keys();

/// Reads a recipe file and applies "section.key=value" overrides; throws ConfigError (naming the
/// file and key) or IOError (file unreadable). The result is validated.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
/// Parses a recipe from TOML text; `origin` names it in errors.
TrainConfig parse_config(const std::string& toml_text, const std::string& origin,
                         const std::vector<std::string>& overrides = {});
/// Applies one "section.key=value" override.
void apply_override(TrainConfig& config, const std::string& assignment);
/// Checks ranges and consistency (e.g. global_batch divisible by micro_batch x dp).
void validate_config(const TrainConfig& config);
/// The effective recipe as TOML: every key, with its value.
std::string config_to_toml(const TrainConfig& config);

}  // namespace tsumugi

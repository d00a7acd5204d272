// tsumugi train / eval / generate / export.
#include <tsumugi/core/threads.h>
#include <tsumugi/data/loader.h>
#include <tsumugi/dist/process_group.h>
#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/config.h>
#include <tsumugi/train/eval.h>
#include <tsumugi/train/export.h>
#include <tsumugi/train/generate.h>
#include <tsumugi/train/trainer.h>

#include <cstdio>
#include <filesystem>

#include "commands.h"

namespace tsumugi::cli {
namespace {

// The checkpoint that --checkpoint names (of a run directory, its newest that verifies), with a
// warning for every damaged newer one passed over, as a resumed run prints them.
std::string checkpoint_to_load(const std::string& path) {
  std::vector<std::string> skipped;
  const std::string dir = find_checkpoint(path, &skipped);
  for (const std::string& problem : skipped)
    std::fprintf(stderr, "tsumugi: warning: skipping damaged checkpoint: %s\n", problem.c_str());
  return dir;
}

struct TrainArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string resume = "auto";
  std::string trace;
  bool print_keys = false;
};

void run_train(const TrainArgs& args) {
  if (args.print_keys) {
    for (const ConfigKey& key : config_keys()) std::printf("%-26s %-7s %s\n", key.name.c_str(), key.type.c_str(), key.help.c_str());
    return;
  }
  std::vector<std::string> overrides = args.overrides;
  if (!args.trace.empty()) overrides.push_back("log.trace=" + args.trace);
  const TrainConfig config = load_config(args.recipe, overrides);
  if (job_rank() == 0)  // once per job, not once per rank
    std::printf("# effective configuration (%s)\n%s\n", args.recipe.c_str(), config_to_toml(config).c_str());
  run_training(config, args.resume == "auto");
}

// Moves a loaded (fp32, CPU) model to `device` ("cpu", "cuda", "cuda:N") computing in `dtype`.
void place(CausalLM& model, const std::string& device, const std::string& dtype) {
  model.to(Device::parse(device));
  model.to(parse_dtype(dtype));
}

struct EvalArgs {
  std::string checkpoint, data, tokenizer, device = "cpu", dtype = "f32";
  int64_t batch = 8;
  int64_t seq_len = 0;
};

// A prep output folder holds val/ and train/; a split folder holds manifest.json.
std::string split_folder(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(path) / "manifest.json")) return path;
  if (fs::exists(fs::path(path) / "val" / "manifest.json")) return (fs::path(path) / "val").string();
  return path;  // ShardSet::open reports what is missing
}

void run_eval(const EvalArgs& args) {
  const TrainedModel trained = load_trained_model(checkpoint_to_load(args.checkpoint), args.tokenizer);
  place(*trained.model, args.device, args.dtype);
  const int64_t seq_len = args.seq_len > 0 ? args.seq_len : trained.config.data.seq_len;
  const auto shards = std::make_shared<const ShardSet>(ShardSet::open(
      split_folder(args.data), {.verify_checksums = true, .expected_tokenizer_sha256 = trained.tokenizer.sha256()}));
  ValidationIterator batches(shards, seq_len, args.batch);
  const EvalResult r = evaluate(*trained.model, batches, trained.tokenizer);
  const double unigram = unigram_bits_per_byte(*shards, trained.tokenizer);
  std::printf("checkpoint %s (step %lld) on %s\n", trained.dir.c_str(), static_cast<long long>(trained.step),
              split_folder(args.data).c_str());
  std::printf("unigram baseline (entropy of the split's token frequencies): %.4f bits per byte; the model is %.1f%% below it\n",
              unigram, 100.0 * (1.0 - r.bits_per_byte / unigram));
  std::printf("loss=%.6f perplexity=%.4f bits_per_byte=%.6f unigram_bits_per_byte=%.6f tokens=%lld bytes=%llu\n", r.loss,
              r.perplexity, r.bits_per_byte, unigram, static_cast<long long>(r.tokens),
              static_cast<unsigned long long>(r.bytes));
}

struct GenerateArgs {
  std::string checkpoint, prompt, tokenizer, device = "cpu", dtype = "f32";
  int64_t max_tokens = 100;
  SamplingOptions sampling;
  uint64_t seed = 0;
  bool show_ids = false;
  bool ignore_eos = false;
};

void run_generate(const GenerateArgs& args) {
  const TrainedModel trained = load_trained_model(checkpoint_to_load(args.checkpoint), args.tokenizer);
  place(*trained.model, args.device, args.dtype);
  std::vector<int64_t> prompt;
  for (int32_t id : trained.tokenizer.encode(args.prompt)) prompt.push_back(id);
  if (prompt.empty()) throw ValueError("[generate] the prompt is empty");
  Generator gen(args.seed);
  const std::vector<int64_t> out =
      generate(*trained.model, prompt, args.max_tokens, args.sampling, gen, args.ignore_eos ? -1 : trained.tokenizer.eos_id());
  const std::vector<int32_t> ids(out.begin(), out.end());
  std::printf("%s%s\n", args.prompt.c_str(), trained.tokenizer.decode(ids).c_str());
  if (args.show_ids) {
    auto join = [](const auto& v) {
      std::string s;
      for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
      return s;
    };
    std::printf("prompt_ids=%s\ngenerated_ids=%s\n", join(prompt).c_str(), join(out).c_str());
  }
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto train = std::make_shared<TrainArgs>();
  CLI::App* t = app.add_subcommand("train", "Train a model from a TOML recipe (configs/*.toml)");
  t->add_option("recipe", train->recipe, "recipe file");
  t->add_option("--set", train->overrides, "override a recipe key: --set train.lr=3e-4 (repeatable)");
  t->add_option("--resume", train->resume, "auto: continue from the newest complete checkpoint; never: start afresh")
      ->check(CLI::IsMember({"auto", "never"}))
      ->capture_default_str();
  t->add_option("--trace", train->trace,
                "write a Chrome trace (chrome://tracing, Perfetto) of the first log.trace_steps steps: every rank's "
                "forward, backward, send, receive and optimizer spans");
  t->add_flag("--list-keys", train->print_keys, "print every recipe key with its type and meaning");
  t->callback([train] {
    if (!train->print_keys && train->recipe.empty()) throw CLI::RequiredError("recipe");
    run_train(*train);
  });

  auto eval = std::make_shared<EvalArgs>();
  CLI::App* e = app.add_subcommand("eval", "Loss, perplexity and bits per byte of a checkpoint on a validation split");
  e->add_option("--checkpoint", eval->checkpoint, "checkpoint or run directory")->required();
  e->add_option("--data", eval->data, "validation shards (a split folder, or a prep output folder)")->required();
  e->add_option("--tokenizer", eval->tokenizer, "SentencePiece model (default: the run's)");
  e->add_option("--batch", eval->batch, "sequences per forward pass")->capture_default_str();
  e->add_option("--seq-len", eval->seq_len, "tokens per sequence (default: the recipe's)");
  e->add_option("--device", eval->device, "cpu, cuda or cuda:N")->capture_default_str();
  e->add_option("--dtype", eval->dtype, "compute dtype: f32, bf16 or f16 (bf16, f16: cuda)")->capture_default_str();
  e->callback([eval] { run_eval(*eval); });

  auto gen = std::make_shared<GenerateArgs>();
  CLI::App* g = app.add_subcommand("generate", "Continue a prompt with a trained model");
  g->add_option("--checkpoint", gen->checkpoint, "checkpoint or run directory")->required();
  g->add_option("--prompt", gen->prompt, "text to continue")->required();
  g->add_option("--tokenizer", gen->tokenizer, "SentencePiece model (default: the run's)");
  g->add_option("--max-tokens", gen->max_tokens, "tokens to generate")->capture_default_str();
  g->add_option("--temperature", gen->sampling.temperature, "0: greedy")->capture_default_str();
  g->add_option("--top-k", gen->sampling.top_k, "0: off")->capture_default_str();
  g->add_option("--top-p", gen->sampling.top_p, "1: off")->capture_default_str();
  g->add_option("--seed", gen->seed, "sampling seed")->capture_default_str();
  g->add_option("--device", gen->device, "cpu, cuda or cuda:N")->capture_default_str();
  g->add_option("--dtype", gen->dtype, "compute dtype: f32, bf16 or f16 (bf16, f16: cuda)")->capture_default_str();
  g->add_flag("--show-ids", gen->show_ids, "also print the prompt's and the generated token ids");
  g->add_flag("--ignore-eos", gen->ignore_eos, "keep generating after the end-of-document token");
  g->callback([gen] { run_generate(*gen); });

  // CLI11 keeps references to these strings: they live as long as the callback that owns them.
  struct ExportArgs {
    std::string checkpoint, format = "hf", out;
  };
  auto x_args = std::make_shared<ExportArgs>();
  CLI::App* x = app.add_subcommand("export", "Write a Hugging Face model directory from a checkpoint");
  x->add_option("--checkpoint", x_args->checkpoint, "checkpoint or run directory")->required();
  x->add_option("--format", x_args->format, "hf (transformers)")->check(CLI::IsMember({"hf"}))->capture_default_str();
  x->add_option("--out", x_args->out, "output directory")->required();
  x->callback([x_args] {
    const std::string dir = checkpoint_to_load(x_args->checkpoint);
    export_hf(dir, x_args->out);
    std::printf("exported %s to %s\n", dir.c_str(), x_args->out.c_str());
  });
}

}  // namespace tsumugi::cli

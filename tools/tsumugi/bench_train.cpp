// tsumugi bench train: times full training steps (forward, backward, clipping, AdamW) of a GPT-2
// or Llama model on random tokens, and a large sgemm on the same threads, and prints MFU.
//
// Model FLOPs per token are 6 N + 12 L T D (Kaplan et al. 2020; PaLM appendix B): N counts the
// parameters that take part in a matrix product per token (all projections and the output head,
// not the embedding lookups); 12 L T D is the attention score and value products, forward and
// backward, counted for the full T x T matrix as is conventional (the causal kernel does about
// half of that work).
#include <tsumugi/train/trainer.h>
#include <tsumugi/tsumugi.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench_util.h"
#include "commands.h"

namespace tsumugi::cli {
namespace {

struct BenchTrainOptions {
  std::string arch = "gpt2";
  int64_t layers = 4, heads = 4, kv_heads = 0, dim = 256, ffn_dim = 0, vocab = 8192, seq = 256, batch = 8;
  int steps = 10, warmup = 2, threads = 0;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void run_bench_train(const BenchTrainOptions& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const int threads = num_threads();
  ModelConfig config;
  config.arch = parse_arch(o.arch);
  config.layers = o.layers;
  config.heads = o.heads;
  config.kv_heads = o.kv_heads;
  config.dim = o.dim;
  config.ffn_dim = o.ffn_dim;
  config.vocab = o.vocab;
  config.context = o.seq;
  std::shared_ptr<CausalLM> model = make_model(config);
  model->init_weights(0);
  AdamW optimizer(model->named_parameters(), {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  Generator gen(7);
  const Tensor tokens = randint(0, o.vocab, {o.batch, o.seq + 1}, gen);
  const Tensor inputs = tokens.narrow(1, 0, o.seq).contiguous();
  const Tensor targets = tokens.narrow(1, 1, o.seq).contiguous().view({-1});

  fmt::print("bench train: {} layers={} heads={} kv_heads={} dim={} ffn={} vocab={} seq={} batch={} threads={}\n",
             o.arch, o.layers, o.heads, model->config().kv_heads, o.dim, model->config().ffn_dim, o.vocab, o.seq,
             o.batch, threads);
  fmt::print("parameters: {:.2f} M total, {:.2f} M in matrix products\n", model->num_parameters() / 1e6,
             model->num_matmul_parameters() / 1e6);
  const double sgemm_before = measure_gemm_gflops();
  std::vector<double> times;
  double loss_value = 0;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const auto start = Clock::now();
    Tensor logits = model->forward(inputs);
    Tensor loss = cross_entropy(logits.view({-1, o.vocab}), targets);
    loss.backward();
    clip_grad_norm(model->parameters(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    loss_value = loss.item<double>();
    const double elapsed = seconds_since(start);
    if (step >= o.warmup) times.push_back(elapsed);
    fmt::print("step {:3d}{} loss {:.4f} time {:.3f} s\n", step, step < o.warmup ? " (warm-up)" : "", loss_value,
               elapsed);
  }
  const double sgemm = std::max(sgemm_before, measure_gemm_gflops());
  const double step_time = median(times);
  const double tokens_per_s = static_cast<double>(o.batch * o.seq) / step_time;
  const double model_gflops = model->flops_per_token(o.seq) * tokens_per_s / 1e9;
  fmt::print("median step {:.3f} s over {} steps\n", step_time, times.size());
  fmt::print("tokens_per_s={:.1f} model_gflops={:.1f} sgemm_gflops={:.1f} mfu={:.3f} peak_rss_mb={:.0f}\n", tokens_per_s,
             model_gflops, sgemm, model_gflops / sgemm, peak_rss_mb());
}

}  // namespace

void add_bench_train_command(CLI::App& bench) {
  auto options = std::make_shared<BenchTrainOptions>();
  CLI::App* cmd = bench.add_subcommand("train", "Time training steps of a model on random tokens and report MFU");
  cmd->add_option("--arch", options->arch, "gpt2 or llama")->check(CLI::IsMember({"gpt2", "llama"}))->capture_default_str();
  cmd->add_option("--layers", options->layers, "transformer blocks")->capture_default_str();
  cmd->add_option("--heads", options->heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", options->kv_heads, "key/value heads (llama; 0: same as heads)")->capture_default_str();
  cmd->add_option("--dim", options->dim, "model width")->capture_default_str();
  cmd->add_option("--ffn", options->ffn_dim, "MLP width (0: the architecture's default)")->capture_default_str();
  cmd->add_option("--vocab", options->vocab, "vocabulary size")->capture_default_str();
  cmd->add_option("--seq", options->seq, "sequence length")->capture_default_str();
  cmd->add_option("--batch", options->batch, "sequences per step")->capture_default_str();
  cmd->add_option("--steps", options->steps, "timed steps")->capture_default_str();
  cmd->add_option("--warmup", options->warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--threads", options->threads, "OpenMP/BLAS threads (0: all cores)")->capture_default_str();
  cmd->callback([options] { run_bench_train(*options); });
}

}  // namespace tsumugi::cli

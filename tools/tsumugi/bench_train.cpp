// tsumugi bench train: times full training steps (forward, backward, clipping, AdamW) of a GPT-2
// or Llama model on random tokens, on the CPU or a GPU, and prints MFU.
//
// Model FLOPs per token are 6 N + 12 L T D (Kaplan et al. 2020; PaLM appendix B): N counts the
// parameters that take part in a matrix product per token (all projections and the output head,
// not the embedding lookups); 12 L T D is the attention score and value products, forward and
// backward, counted for the full T x T matrix as is conventional (the causal kernel does about
// half of that work).
//
// MFU is taken against a matrix product measured in the same process by measure_gemm_gflops (the
// trainer's): on the CPU the best 2048^3 sgemm, before and after the steps; on a GPU the best
// 8192^3 product in the training dtype through tsumugi's matmul, after the steps (the GPU's clocks
// are up, and its buffers do not count in the peak memory).
// With --dtype bf16 the parameters and the compute are bf16; AdamW keeps fp32 master weights.
#include <tsumugi/train/trainer.h>
#include <tsumugi/tsumugi.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "commands.h"

namespace tsumugi::cli {
namespace {

struct BenchTrainOptions {
  std::string preset = "none";
  std::string arch = "gpt2";
  int64_t layers = 4, heads = 4, kv_heads = 0, dim = 256, ffn_dim = 0, vocab = 8192, seq = 256, batch = 8;
  int steps = 10, warmup = 2, threads = 0;
  std::string device = "cpu", dtype = "f32";
  double peak_tflops = 0;  // > 0: MFU against this instead of a measured product
};

// The benchmark models of the GPU check (docs/gpu.md); flags given explicitly override them.
//   gpt2-124m: GPT-2 small with a 32,768-token vocabulary, 111 M parameters (85 M in the blocks).
//   llama-1b:  Llama 3.2 1B's shape with a 32,768-token vocabulary and tied embeddings:
//              16 x (attention 10.5 M + SwiGLU 50.3 M) + embedding 67.1 M = 1.04 B parameters.
BenchTrainOptions preset_options(const std::string& name) {
  BenchTrainOptions p;
  if (name == "gpt2-124m") {
    p.arch = "gpt2", p.layers = 12, p.heads = 12, p.dim = 768, p.vocab = 32768, p.seq = 1024, p.batch = 32;
  } else if (name == "llama-1b") {
    p.arch = "llama", p.layers = 16, p.heads = 32, p.kv_heads = 8, p.dim = 2048, p.ffn_dim = 8192;
    p.vocab = 32768, p.seq = 2048, p.batch = 8;
  }
  p.warmup = name == "none" ? 2 : 3;
  p.preset = name;
  return p;
}

// The preset's values, then every model-shape flag that was given on the command line.
BenchTrainOptions apply_preset(const BenchTrainOptions& given, const CLI::App& cmd) {
  BenchTrainOptions o = preset_options(given.preset);
  const std::pair<const char*, int64_t BenchTrainOptions::*> shape_flags[] = {
      {"--layers", &BenchTrainOptions::layers}, {"--heads", &BenchTrainOptions::heads},
      {"--kv-heads", &BenchTrainOptions::kv_heads}, {"--dim", &BenchTrainOptions::dim},
      {"--ffn", &BenchTrainOptions::ffn_dim},     {"--vocab", &BenchTrainOptions::vocab},
      {"--seq", &BenchTrainOptions::seq},         {"--batch", &BenchTrainOptions::batch}};
  for (const auto& [flag, member] : shape_flags)
    if (cmd.count(flag) > 0) o.*member = given.*member;
  if (cmd.count("--arch") > 0) o.arch = given.arch;
  if (cmd.count("--warmup") > 0) o.warmup = given.warmup;
  o.steps = given.steps, o.threads = given.threads, o.device = given.device, o.dtype = given.dtype;
  o.peak_tflops = given.peak_tflops;
  return o;
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void run_bench_train(const BenchTrainOptions& o) {
  const Device device = bench_device(o.device);
  const DType dtype = parse_dtype(o.dtype);
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
  const auto setup_start = Clock::now();
  std::shared_ptr<CausalLM> model = make_model(config);
  model->init_weights(0);
  if (dtype != DType::f32) model->to(dtype);  // on the CPU first: half the bytes to move
  if (device.is_cuda()) model->to(device);
  AdamW optimizer(model->named_parameters(), {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  Generator gen(7);
  const Tensor tokens = randint(0, o.vocab, {o.batch, o.seq + 1}, gen);
  const Tensor inputs = tokens.narrow(1, 0, o.seq).contiguous().to(device);
  const Tensor targets = tokens.narrow(1, 1, o.seq).contiguous().view({-1}).to(device);
  if (device.is_cuda()) cuda_synchronize(device.index);
  const double setup_s = seconds_since(setup_start);

  fmt::print("bench train: {} ({}) layers={} heads={} kv_heads={} dim={} ffn={} vocab={} seq={} batch={} "
             "device={} dtype={} threads={}\n",
             o.arch, o.preset, o.layers, o.heads, model->config().kv_heads, o.dim, model->config().ffn_dim, o.vocab,
             o.seq, o.batch, device.str(), dtype_name(dtype), threads);
  fmt::print("parameters: {:.2f} M total, {:.2f} M in matrix products; set up in {:.1f} s\n",
             model->num_parameters() / 1e6, model->num_matmul_parameters() / 1e6, setup_s);
  // On the CPU the sgemm rate is taken before and after (the best of both); on a GPU after.
  const bool measure = o.peak_tflops <= 0;
  const double sgemm_before = measure && device.is_cpu() ? measure_gemm_gflops() : 0.0;
  std::vector<double> times;
  double loss_value = 0, first_loss = 0;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const auto start = Clock::now();
    Tensor logits = model->forward(inputs);
    Tensor loss = cross_entropy(logits.view({-1, o.vocab}), targets);
    loss.backward();
    clip_grad_norm(model->parameters(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    if (device.is_cuda()) cuda_synchronize(device.index);  // the step's kernels have finished
    const double elapsed = seconds_since(start);
    loss_value = loss.item<double>();
    if (step == 0) first_loss = loss_value;
    if (step >= o.warmup) times.push_back(elapsed);
    fmt::print("step {:3d}{} loss {:.4f} time {:.3f} s\n", step, step < o.warmup ? " (warm-up)" : "", loss_value,
               elapsed);
    std::fflush(stdout);  // a step that hangs still shows the ones before it
  }
  const double step_time = median(times);
  const double tokens_per_s = static_cast<double>(o.batch * o.seq) / step_time;
  const double model_gflops = model->flops_per_token(o.seq) * tokens_per_s / 1e9;
  fmt::print("median step {:.3f} s over {} steps\n", step_time, times.size());
  if (device.is_cpu()) {
    const double sgemm = measure ? std::max(sgemm_before, measure_gemm_gflops()) : o.peak_tflops * 1e3;
    fmt::print("RESULT {{\"bench\": \"train\", \"impl\": \"tsumugi\", \"preset\": \"{}\", \"device\": \"cpu\", "
               "\"dtype\": \"{}\", \"batch\": {}, \"seq\": {}, \"step_ms\": {:.2f}, \"tokens_per_s\": {:.1f}, "
               "\"mfu\": {:.4f}, \"gemm_tflops\": {:.3f}, \"peak_rss_mb\": {:.0f}}}\n",
               o.preset, dtype_name(dtype), o.batch, o.seq, step_time * 1e3, tokens_per_s, model_gflops / sgemm,
               sgemm / 1e3, peak_rss_mb());
    fmt::print("tokens_per_s={:.1f} model_gflops={:.1f} sgemm_gflops={:.1f} mfu={:.3f} peak_rss_mb={:.0f}\n",
               tokens_per_s, model_gflops, sgemm, model_gflops / sgemm, peak_rss_mb());
    return;
  }
  // Read before the product below allocates its matrices.
  const double peak_gib = static_cast<double>(memory_stats(device).peak_allocated) / (1 << 30);
  const double gemm_tflops = measure ? measure_gemm_gflops(device, dtype) / 1e3 : o.peak_tflops;
  const double model_tflops = model_gflops / 1e3;
  fmt::print("RESULT {{\"bench\": \"train\", \"impl\": \"tsumugi\", \"preset\": \"{}\", \"device\": \"{}\", "
             "\"dtype\": \"{}\", \"batch\": {}, \"seq\": {}, \"params\": {}, \"step_ms\": {:.2f}, "
             "\"tokens_per_s\": {:.1f}, \"model_tflops\": {:.2f}, \"gemm_tflops\": {:.2f}, \"mfu\": {:.4f}, "
             "\"peak_mem_gib\": {:.2f}, \"first_loss\": {:.4f}, \"last_loss\": {:.4f}}}\n",
             o.preset, device.str(), dtype_name(dtype), o.batch, o.seq, model->num_parameters(), step_time * 1e3,
             tokens_per_s, model_tflops, gemm_tflops, model_tflops / gemm_tflops, peak_gib, first_loss, loss_value);
  fmt::print("tokens_per_s={:.1f} model_tflops={:.1f} gemm_tflops={:.1f} mfu={:.3f} peak_gpu_gib={:.2f}\n",
             tokens_per_s, model_tflops, gemm_tflops, model_tflops / gemm_tflops, peak_gib);
}

}  // namespace

void add_bench_train_command(CLI::App& bench) {
  auto options = std::make_shared<BenchTrainOptions>();
  CLI::App* cmd = bench.add_subcommand("train", "Time training steps of a model on random tokens and report MFU");
  cmd->add_option("--preset", options->preset,
                  "gpt2-124m (T=1024, batch 32) or llama-1b (T=2048, batch 8); flags given override it")
      ->check(CLI::IsMember({"none", "gpt2-124m", "llama-1b"}))
      ->capture_default_str();
  cmd->add_option("--arch", options->arch, "gpt2 or llama")->check(CLI::IsMember({"gpt2", "llama"}))->capture_default_str();
  cmd->add_option("--layers", options->layers, "transformer blocks")->capture_default_str();
  cmd->add_option("--heads", options->heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", options->kv_heads, "key/value heads (llama; 0: same as heads)")->capture_default_str();
  cmd->add_option("--dim", options->dim, "model width")->capture_default_str();
  cmd->add_option("--ffn", options->ffn_dim, "MLP width (0: the architecture's default)")->capture_default_str();
  cmd->add_option("--vocab", options->vocab, "vocabulary size")->capture_default_str();
  cmd->add_option("--seq", options->seq, "sequence length")->capture_default_str();
  cmd->add_option("--batch", options->batch, "sequences per step")->capture_default_str();
  cmd->add_option("--steps", options->steps, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--warmup", options->warmup, "untimed steps first (3 with a preset)")->capture_default_str();
  cmd->add_option("--threads", options->threads, "OpenMP/BLAS threads (0: all cores)")->capture_default_str();
  cmd->add_option("--device", options->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", options->dtype, "f32, or bf16 (bf16 weights and compute, fp32 AdamW master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--peak-tflops", options->peak_tflops,
                  "MFU against this many TFLOP/s instead of a measured product (e.g. 989 for an H100/H200 datasheet)")
      ->capture_default_str();
  cmd->callback([options, cmd] { run_bench_train(apply_preset(*options, *cmd)); });
}

}  // namespace tsumugi::cli

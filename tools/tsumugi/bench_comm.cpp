// tsumugi bench comm: all-reduce bandwidth over message sizes (as nccl-tests reports it) and the
// cost of data parallelism in a training step. Run it under mpirun:
//   mpirun -np 2 tsumugi bench comm                  # cpu tensors over MPI
//   mpirun -np 8 tsumugi bench comm --device cuda    # device tensors over NCCL, one GPU per rank
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/dist/process_group.h>
#include <tsumugi/train/trainer.h>
#include <tsumugi/tsumugi.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "bench_util.h"
#include "commands.h"

namespace tsumugi::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchCommOptions {
  std::string device = "cpu";
  int64_t min_bytes = 1 << 10, max_bytes = 64 << 20;
  int iterations = 20;
  int64_t layers = 4, dim = 256, vocab = 8192, seq = 256, micro_batch = 4;
  int steps = 6;
  double bucket_mb = 25;
};

// One timed training step on this rank's rows; with `dp`, gradients are averaged over the ranks.
double timed_step(CausalLM& model, AdamW& optimizer, DataParallel* dp, const Tensor& inputs, const Tensor& targets,
                  int64_t vocab) {
  const auto start = Clock::now();
  Tensor loss = cross_entropy(model.forward(inputs).view({-1, vocab}), targets);
  loss.backward();
  if (dp) dp->synchronize_gradients();
  optimizer.step();
  optimizer.zero_grad();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The group the all-reduces are timed over: the job's group for "cpu"; for "cuda", an NCCL
// communicator with each rank on the GPU of its node-local rank.
std::shared_ptr<ProcessGroup> bench_group(const std::shared_ptr<ProcessGroup>& world, const std::string& name,
                                          Device& device) {
  if (name == "cpu") return world;
  if (name != "cuda")
    throw ValueError(fmt::format("[bench comm] --device {}: expected cpu or cuda (each rank takes the GPU of its "
                                 "node-local rank)", name));
  device = bench_device(fmt::format("cuda:{}", process_info().local_rank));
  if (!nccl_built())
    throw NotImplementedError("[bench comm] --device cuda: this tsumugi was built without NCCL (configure with "
                              "-DTSUMUGI_CUDA=ON -DTSUMUGI_NCCL=ON and NCCL under /usr/local/cuda)");
  return nccl_group(world, device);
}

void run_bench_comm(const BenchCommOptions& o) {
  const std::shared_ptr<ProcessGroup> world = default_group();
  Device device = Device::cpu();
  const std::shared_ptr<ProcessGroup> group = bench_group(world, o.device, device);
  const int rank = world->rank(), ranks = world->size();
  const bool leader = rank == 0;
  if (leader) {
    fmt::print("bench comm: {} ranks over {} ({} tensors), {} threads per rank\n", ranks, group->backend(),
               device.is_cpu() ? "cpu" : "cuda", num_threads());
    fmt::print("{:>12} {:>12} {:>12} {:>12}\n", "bytes", "time (us)", "algbw GB/s", "busbw GB/s");
  }
  // 1. All-reduce (sum, f32) over message sizes; bus bandwidth = algbw * 2 (n - 1) / n. On the
  // GPU a blocking all-reduce returns when the device has finished it.
  for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
    Tensor buffer = ones({bytes / 4}, {.device = device});
    for (int i = 0; i < 3; ++i) group->all_reduce(buffer);
    std::vector<double> times;
    for (int i = 0; i < o.iterations; ++i) {
      group->barrier();
      const auto start = Clock::now();
      group->all_reduce(buffer);
      times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    Tensor slowest = from_data<double>({median(times)});
    world->all_reduce(slowest, ReduceOp::max);
    const double seconds = slowest.item<double>();
    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    if (leader)
      fmt::print("{:>12} {:>12.1f} {:>12.3f} {:>12.3f}\n", bytes, seconds * 1e6, algbw,
                 algbw * 2.0 * (ranks - 1) / std::max(ranks, 1));
  }

  // 2. A GPT-2 training step with and without gradient averaging (DataParallel takes cpu parameters).
  if (device.is_cuda()) {
    if (leader) fmt::print("(the training-step measurement runs with --device cpu only)\n");
    return;
  }
  ModelConfig config{.arch = Arch::gpt2, .layers = o.layers, .heads = 4, .dim = o.dim, .vocab = o.vocab, .context = o.seq};
  auto model = make_model(config);
  model->init_weights(0);
  AdamW optimizer(model->named_parameters(), {.lr = 1e-4});
  Generator gen(static_cast<uint64_t>(rank) + 1);
  const Tensor tokens = randint(0, o.vocab, {o.micro_batch, o.seq + 1}, gen);
  const Tensor inputs = tokens.narrow(1, 0, o.seq).contiguous();
  const Tensor targets = tokens.narrow(1, 1, o.seq).contiguous().view({-1});
  std::vector<double> local, parallel;
  {
    DataParallel dp(*model, world, {.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20))});
    for (int i = 0; i < o.steps + 1; ++i) {
      const double t = timed_step(*model, optimizer, nullptr, inputs, targets, o.vocab);
      if (i > 0) local.push_back(t);
      world->barrier();
    }
    for (int i = 0; i < o.steps + 1; ++i) {
      if (i == 1) dp.reset_stats();
      const double t = timed_step(*model, optimizer, &dp, inputs, targets, o.vocab);
      if (i > 0) parallel.push_back(t);
    }
    const DataParallel::Stats stats = dp.stats();
    const double hidden = stats.communication_seconds > 0 ? 1.0 - stats.exposed_seconds / stats.communication_seconds : 0;
    if (leader) {
      fmt::print("training step (gpt2, {} layers, dim {}, vocab {}, {} x {} tokens per rank): {:.3f} s alone, "
                 "{:.3f} s with gradient averaging over {} ranks\n",
                 o.layers, o.dim, o.vocab, o.micro_batch, o.seq, median(local), median(parallel), ranks);
      fmt::print("ranks={} grad_mb={:.1f} buckets_per_step={} dp_overhead={:.3f} hidden_fraction={:.3f}\n", ranks,
                 stats.bytes / 1e6 / o.steps, stats.buckets / o.steps, median(parallel) / median(local) - 1.0, hidden);
    }
  }
}

}  // namespace

void add_bench_comm_command(CLI::App& bench) {
  auto options = std::make_shared<BenchCommOptions>();
  CLI::App* cmd = bench.add_subcommand("comm", "All-reduce bandwidth and the data-parallel step overhead (under mpirun)");
  cmd->add_option("--device", options->device, "cpu (tensors over MPI) or cuda (device tensors over NCCL)")
      ->capture_default_str();
  cmd->add_option("--min-bytes", options->min_bytes, "smallest message")->capture_default_str();
  cmd->add_option("--max-bytes", options->max_bytes, "largest message")->capture_default_str();
  cmd->add_option("--iterations", options->iterations, "timed all-reduces per size")->capture_default_str();
  cmd->add_option("--layers", options->layers, "model blocks")->capture_default_str();
  cmd->add_option("--dim", options->dim, "model width")->capture_default_str();
  cmd->add_option("--steps", options->steps, "timed training steps")->capture_default_str();
  cmd->add_option("--bucket-mb", options->bucket_mb, "gradient bucket size, MiB")->capture_default_str();
  cmd->callback([options] { run_bench_comm(*options); });
}

}  // namespace tsumugi::cli

// The training loop. Exact resume rests on four things: the weights and optimizer state are
// saved bit for bit (fp32 safetensors), the data order is a pure function of (seed, samples
// consumed), the dropout generator's offset is saved, and every kernel is deterministic.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/optim.h>
#include <tsumugi/core/threads.h>
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/generate.h>
#include <tsumugi/train/schedule.h>
#include <tsumugi/train/trainer.h>

#include <fmt/format.h>
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "core/io/json_integer.h"
#include "faults.h"
#include "gradient_step.h"
#include "metrics.h"
#include "spike.h"
#include "trainer_optimizer.h"

namespace tsumugi {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

volatile sig_atomic_t stop_signal = 0;
void on_stop_signal(int signal) { stop_signal = signal; }

// Installs SIGINT/SIGTERM handlers for its lifetime: the loop finishes the step and saves.
class StopSignals {
 public:
  StopSignals() {
    stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  bool requested() const { return stop_signal != 0; }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string model_section(const TrainConfig& c) {
  const std::string all = config_to_toml(c);
  const auto begin = all.find("[model]");
  return all.substr(begin, all.find("\n[", begin) - begin);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  TSU_CHECK(out.good(), IOError, "[train] cannot write {}", path);
}

// Everything a run needs, built from the recipe.
struct Run {
  TrainConfig config;
  Tokenizer tokenizer;
  std::shared_ptr<const ShardSet> train_shards;
  std::shared_ptr<const ShardSet> valid_shards;
  std::shared_ptr<CausalLM> model;
  std::unique_ptr<PipelineStage> stage;  // parallel.pp > 1
  std::unique_ptr<TrainerOptimizer> optimizer;
  int64_t start_step = 0;
  std::vector<double> loss_window;  // the spike detector's, from the checkpoint
};

// The first layer of each stage: the recipe's parallel.stage_layers, else balanced by compute.
std::vector<int64_t> stage_starts(const TrainConfig& c) {
  if (c.parallel.stage_layers.empty()) return balance_layers(c.model, c.data.seq_len, c.parallel.pp);
  std::vector<int64_t> starts;
  int64_t next = 0;
  std::string_view rest = c.parallel.stage_layers;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    int64_t count = 0;
    try {
      size_t used = 0;
      count = std::stoll(item, &used);
      if (used != item.size()) count = 0;
    } catch (const std::exception&) {
    }
    TSU_CHECK(count > 0, ConfigError, "[config] parallel.stage_layers = \"{}\": '{}' is not a positive block count",
              c.parallel.stage_layers, item);
    starts.push_back(next);
    next += count;
  }
  TSU_CHECK(static_cast<int64_t>(starts.size()) == c.parallel.pp && next == c.model.layers, ConfigError,
            "[config] parallel.stage_layers = \"{}\" must give {} stages (parallel.pp) whose blocks add up to "
            "model.layers ({})",
            c.parallel.stage_layers, c.parallel.pp, c.model.layers);
  return starts;
}

// Data parallelism over GPUs: gradients and weights over NCCL (GPU local_rank of each node),
// scalars and flags over MPI, in one group.
std::shared_ptr<ProcessGroup> with_nccl(std::shared_ptr<ProcessGroup> mpi, const ProcessInfo& where) {
  TSU_CHECK(nccl_built(), ConfigError,
            "[config] device.type = \"cuda\" with {} processes needs NCCL, and this build of tsumugi has none "
            "(TSUMUGI_NCCL=OFF or NCCL not found); set parallel.gpu_comm = \"mpi\", or rebuild with NCCL",
            mpi->size());
  const int gpus = cuda_device_count();
  TSU_CHECK(where.local_world <= gpus, ConfigError,
            "[config] {} processes on this node but {} CUDA device(s) visible: data parallelism over NCCL takes one "
            "GPU per process (mpirun -np <GPUs per node x nodes>; parallel.gpu_comm = \"mpi\" lets ranks share a GPU)",
            where.local_world, gpus);
  return device_aware_group(mpi, nccl_group(mpi, Device::cuda(where.local_rank)));
}

// `pp_over_nccl`: the pipeline group moves device tensors over NCCL (grouped transport).
Run build_run(const TrainConfig& recipe, bool resume, const std::shared_ptr<ProcessGroup>& group,
              const std::shared_ptr<ProcessGroup>& pp_group, bool pp_over_nccl) {
  const bool leader = group->rank() == 0 && pp_group->rank() == 0;
  const Device device = recipe.device.type == "cuda" ? Device::cuda(process_info().local_rank % std::max(1, cuda_device_count()))
                                                     : Device::cpu();
  if (device.is_cuda()) {
    TSU_CHECK(cuda_built(), ConfigError,
              "[config] device.type = \"cuda\" but this build of tsumugi has no CUDA support (TSUMUGI_CUDA=OFF)");
    TSU_CHECK(cuda_device_count() > 0, ConfigError, "[config] device.type = \"cuda\" but no CUDA device is visible");
  }
  Run run{recipe, Tokenizer::load(recipe.data.tokenizer), {}, {}, {}, {}, {}, 0, {}};
  TrainConfig& c = run.config;
  if (c.model.vocab == 0) c.model.vocab = run.tokenizer.vocab_size();
  TSU_CHECK(c.model.vocab >= run.tokenizer.vocab_size(), ConfigError,
            "[config] model.vocab ({}) is smaller than the tokenizer's vocabulary ({}) in {}", c.model.vocab,
            run.tokenizer.vocab_size(), c.data.tokenizer);
  const ShardSetOptions shard_options{.verify_checksums = true, .expected_tokenizer_sha256 = run.tokenizer.sha256()};
  run.train_shards = std::make_shared<const ShardSet>(ShardSet::open(c.data.train, shard_options));
  if (!c.data.valid.empty())
    run.valid_shards = std::make_shared<const ShardSet>(ShardSet::open(c.data.valid, shard_options));

  run.model = make_model(c.model);
  run.model->init_weights(c.train.seed);
  if (pp_group->size() > 1) {
    run.stage = std::make_unique<PipelineStage>(
        *run.model, pp_group,
        PipelineOptions{.schedule = parse_pipeline_schedule(c.parallel.schedule),
                        .stage_starts = stage_starts(c),
                        .per_micro_batch_tied_sum = c.parallel.deterministic,
                        .grouped_transport = pp_over_nccl});
  }
  run.model->dropout_generator() = Generator(c.train.seed ^ 0x64726f70ull);  // "drop"
  // Weights are initialised (or loaded) in fp32 on the CPU, then moved: the same seed gives the
  // same start on every device. A bf16/f16 model's fp32 master weights live in the optimizer.
  const DType compute = parse_dtype(c.precision.compute);
  auto place_model = [&] {
    StateDict fp32;  // a copy: converting the model changes its parameters in place
    if (compute != DType::f32)
      for (const auto& [name, tensor] : run.model->state_dict()) fp32[name] = tensor.detach().clone();
    run.model->to(device);
    run.model->to(compute);
    run.optimizer = std::make_unique<TrainerOptimizer>(*run.model, c, group, run.stage.get());
    if (compute != DType::f32) run.optimizer->load_master_weights(fp32);
  };
  bool placed = false;
  if (resume) {
    // The newest checkpoint that passes verification; a damaged one is reported and skipped, so
    // that an older good checkpoint is never lost behind it.
    const std::vector<std::string> candidates = CheckpointManager(c.checkpoint.dir, c.checkpoint.keep).candidates();
    for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
      const std::string problem = verify_checkpoint(*it);
      if (!problem.empty()) {
        std::fprintf(stderr, "tsumugi: warning: skipping damaged checkpoint: %s\n", problem.c_str());
        continue;
      }
      const Checkpoint checkpoint = load_checkpoint(*it);
      const nlohmann::json state = nlohmann::json::parse(checkpoint.trainer_json);
      TrainConfig saved = c;
      uint64_t dropout_offset = 0;
      try {
        saved = parse_config(state.at("config").get<std::string>(), *it + "/trainer.json");
        dropout_offset =
            json_integer<uint64_t>(state.at("dropout_offset"), *it + "/trainer.json: dropout_offset");
      } catch (const nlohmann::json::exception& e) {
        TSU_FAIL(IOError, "[train] {}/trainer.json lacks the recipe or the dropout offset: {}", *it, e.what());
      }
      if (saved.model.vocab == 0) saved.model.vocab = c.model.vocab;
      TSU_CHECK(model_section(saved) == model_section(c), ConfigError,
                "[train] the checkpoint {} was trained with a different [model] section; resume with the same "
                "model or use another checkpoint.dir",
                *it);
      run.model->load_state_dict(checkpoint.model);
      place_model();
      placed = true;
      run.optimizer->load_state_dict(checkpoint.optimizer);
      run.model->dropout_generator().set_offset(dropout_offset);
      if (state.contains("loss_window")) run.loss_window = state.at("loss_window").get<std::vector<double>>();
      run.start_step = checkpoint.step;
      if (leader) std::printf("resuming from %s (step %lld)\n", it->c_str(), static_cast<long long>(run.start_step));
      break;
    }
  }
  if (!placed) place_model();
  return run;
}

std::string trainer_state(const Run& run, int64_t step, double loss, int world, int pp,
                          const std::vector<double>& loss_window) {
  const TrainConfig& c = run.config;
  nlohmann::json state = {
      {"step", step},
      {"samples_consumed", static_cast<uint64_t>(step) * static_cast<uint64_t>(c.train.global_batch)},
      {"data_seed", c.data.seed},
      {"dropout_offset", run.model->dropout_generator().offset()},
      {"loss_window", loss_window},
      {"loss", loss},
      {"tokenizer_sha256", run.tokenizer.sha256()},
      {"layout", {{"world", world}, {"dp", world / pp}, {"pp", pp}, {"micro_batch", c.train.micro_batch}}},
      {"config", config_to_toml(c)}};
  return state.dump();
}

}  // namespace

double measure_gemm_gflops(Device device, DType dtype) {
  // The CPU's sgemm at 2048, or a GPU's GEMM at 8192 in the compute dtype: large enough to reach
  // the device's sustained rate, which is what MFU is measured against.
  const int64_t n = device.is_cpu() ? 2048 : 8192;
  Generator gen(1);
  const Tensor a = randn({n, n}, gen).to(device).to(dtype), b = randn({n, n}, gen).to(device).to(dtype);
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const Tensor c = matmul(a, b);
    if (device.is_cuda()) c.select(0, 0).select(0, 0).to(Device::cpu());  // waits for the GEMM
    best = std::max(best, 2.0 * n * n * n / seconds_since(start) / 1e9);
  }
  return best;
}

TrainOutcome run_training(const TrainConfig& recipe, bool resume) {
  const ParallelConfig& parallel = recipe.parallel;
  std::shared_ptr<ProcessGroup> world_group = default_group();
  const ProcessInfo where = process_info();
  const int world = world_group->size();
  const int pp = static_cast<int>(parallel.pp);
  TSU_CHECK(world % pp == 0, ConfigError, "[config] parallel.pp = {} does not divide the job's {} processes", pp, world);
  TSU_CHECK(parallel.dp == 0 || parallel.dp * pp == world, ConfigError,
            "[config] parallel.dp = {} x parallel.pp = {} but the job has {} processes", parallel.dp, pp, world);
  // The mesh: world rank = d * pp + s. Stage s of replica d talks to its neighbours in its
  // pipeline group, and all-reduces its gradients with stage s of the other replicas.
  std::shared_ptr<ProcessGroup> group = world_group, pp_group = local_group();
  if (pp > 1) {
    pp_group = world_group->split(world_group->rank() / pp, world_group->rank() % pp);
    group = world_group->split(world_group->rank() % pp, world_group->rank() / pp);
  }
  bool pp_over_nccl = false;
  if (recipe.device.type == "cuda" && cuda_built() && world > 1) {
    // Device tensors: gradients over NCCL between the data-parallel ranks (one GPU each), or with
    // parallel.gpu_comm = "mpi" through host memory. A pipeline's activations and gradients go
    // over NCCL too when every rank has a GPU of its own, else (stages sharing a GPU, or
    // gpu_comm = "mpi") through host memory over MPI; the rest through host memory.
    const bool nccl = parallel.gpu_comm == "nccl";
    group = group->size() > 1 && nccl ? with_nccl(group, where) : host_staged_group(group);
    if (pp > 1) {
      pp_over_nccl = nccl && nccl_built() && where.local_world <= cuda_device_count();
      pp_group = pp_over_nccl ? device_aware_group(pp_group, nccl_group(pp_group, Device::cuda(where.local_rank)))
                              : host_staged_group(pp_group);
      world_group = host_staged_group(world_group);
    } else {
      world_group = group;
    }
  }
  const int rank = group->rank(), dp = group->size();
  // Threads: the recipe's, else this node's cores shared among its ranks.
  const int threads = parallel.threads > 0 ? static_cast<int>(parallel.threads)
                                           : std::max(1, omp_get_num_procs() / std::max(1, where.local_world));
  set_num_threads(threads);
  if (parallel.blas_threads > 0 || parallel.deterministic)
    set_blas_threads(parallel.blas_threads > 0 ? static_cast<int>(parallel.blas_threads) : 1);

  Run run = build_run(recipe, resume, group, pp_group, pp_over_nccl);
  const TrainConfig& c = run.config;
  CausalLM& model = *run.model;
  TrainerOptimizer& optimizer = *run.optimizer;
  PipelineStage* stage = run.stage.get();
  if (world > 1) broadcast_parameters(model, *world_group);  // identical start everywhere, checksum-verified
  const bool leader = world_group->rank() == 0;  // writes files and prints
  const std::string run_dir = c.checkpoint.dir;
  CheckpointManager checkpoints(run_dir, c.checkpoint.keep);
  std::unique_ptr<MetricsFile> metrics;
  if (leader) {
    fs::create_directories(run_dir);
    write_text(run_dir + "/config.toml", config_to_toml(c));
    write_text(run_dir + "/tokenizer.model", run.tokenizer.model_bytes());  // the run is self-contained
    metrics = std::make_unique<MetricsFile>(run_dir + "/metrics.jsonl", run.start_step);
  }
  auto log_metrics = [&](const nlohmann::json& record) {
    if (metrics) metrics->write(record);
  };

  GradientStep gradient_step(model, c, group, stage);
  const int64_t accumulation = c.train.global_batch / c.train.micro_batch / dp;  // micro-batches per rank
  // Each step, rank r takes rows [r G / R, (r + 1) G / R) of the global batch: consecutive
  // micro-batches, as the deterministic tree needs.
  DataLoader loader(run.train_shards,
                    LoaderOptions{.seq_len = c.data.seq_len, .global_batch = c.train.global_batch, .rank = rank,
                                  .world = dp, .seed = c.data.seed,
                                  .samples_consumed = static_cast<uint64_t>(run.start_step * c.train.global_batch)});
  std::optional<ValidationIterator> validation;
  if (run.valid_shards) validation.emplace(run.valid_shards, c.data.seq_len, c.train.micro_batch, rank, dp);
  const LRSchedule schedule{.kind = c.train.schedule, .lr = c.train.lr, .min_lr = c.train.min_lr,
                            .warmup_steps = c.train.warmup_steps, .total_steps = c.train.steps,
                            .decay_fraction = c.train.decay_fraction};
  const Device device = model.device();
  const double peak_gflops = measure_gemm_gflops(device, parse_dtype(c.precision.compute));
  const double flops_per_step =
      model.flops_per_token(c.data.seq_len) * static_cast<double>(c.train.global_batch * c.data.seq_len);
  const bool terminal = leader && isatty(STDOUT_FILENO);
  if (leader)
    std::printf("training %s: %.2f M parameters, %lld steps of %lld x %lld tokens (%lld ranks x %lld micro-batches of "
                "%lld), %d threads per rank, run in %s\n",
                std::string(arch_name(c.model.arch)).c_str(), model.num_parameters() / 1e6,
                static_cast<long long>(c.train.steps), static_cast<long long>(c.train.global_batch),
                static_cast<long long>(c.data.seq_len), static_cast<long long>(dp),
                static_cast<long long>(accumulation), static_cast<long long>(c.train.micro_batch), threads,
                run_dir.c_str());
  if (leader && stage) {
    std::string cut;
    for (int64_t s = 0; s < pp; ++s) {
      const int64_t begin = stage->stage_starts()[static_cast<size_t>(s)];
      const int64_t end = s + 1 < pp ? stage->stage_starts()[static_cast<size_t>(s + 1)] : c.model.layers;
      cut += fmt::format("{}stage {}: blocks {}-{}", s == 0 ? "" : ", ", s, begin, end - 1);
    }
    std::printf("pipeline: %d stages x %d data-parallel replicas, %s schedule, %lld micro-batches per step; %s%s\n", pp,
                dp, c.parallel.schedule.c_str(), static_cast<long long>(accumulation), cut.c_str(),
                !device.is_cuda() ? ""
                : pp_over_nccl    ? "; activations over NCCL"
                                  : "; activations through host memory");
  }
  if (stage) {
    // From here on each rank holds only its stage's weights; checkpoints, evaluation and samples
    // go through the pipeline.
    const int64_t whole = model.num_parameters();
    stage->release_other_weights();
    Tensor held = empty({pp}, {.dtype = DType::i64});
    stage->group().all_gather(from_data<int64_t>({stage->held_parameters()}), held);
    if (leader) {
      std::string list;
      for (int64_t n : held.to_vector<int64_t>()) list += fmt::format("{}{:.2f}", list.empty() ? "" : ", ", n / 1e6);
      std::printf("pipeline: weights held per stage %s M of %.2f M\n", list.c_str(), whole / 1e6);
    }
  }

  const std::optional<InjectedFault> fault = injected_fault();
  LossSpikeDetector spikes(c.train.spike_window, c.train.spike_zscore);
  spikes.restore(run.loss_window);
  TrainOutcome outcome;
  outcome.step = run.start_step;
  StopSignals signals;
  const auto started = Clock::now();
  double train_seconds = 0;  // time in steps only, for the time-left estimate
  int64_t last_saved = -1;
  auto save = [&](int64_t step) {
    // Every rank holds the same weights and optimizer state: rank 0 writes, the others wait so
    // that no rank runs ahead of a checkpoint that might fail.
    StateDict optimizer_state = optimizer.state_dict();  // collective under ZeRO
    StateDict weights = optimizer.model_weights(model);
    if (stage && rank == 0) {  // replica 0's stages send their pieces to its first stage, the leader
      weights = stage->gather_weights(weights);
      optimizer_state = stage->gather_optimizer_state(optimizer_state);
    }
    if (leader)
      outcome.checkpoint = checkpoints.save(step, weights, optimizer_state,
                                            trainer_state(run, step, outcome.loss, world, pp, spikes.values()));
    world_group->barrier();
    last_saved = step;
  };
  // Evaluation and samples go through the pipeline's stages.
  auto run_eval = [&](int64_t step) {
    if (!validation) return;
    const EvalResult r = evaluate(model, *validation, run.tokenizer, c.eval.batches, group.get(), stage);
    outcome.eval = r;
    log_metrics({{"step", step}, {"val_loss", r.loss}, {"val_perplexity", r.perplexity}, {"val_bpb", r.bits_per_byte},
                 {"val_tokens", r.tokens}});
    if (leader)
      std::printf("%seval @ step %lld: loss %.4f | perplexity %.2f | %.4f bits per byte (%lld tokens)\n",
                terminal ? "\n" : "", static_cast<long long>(step), r.loss, r.perplexity, r.bits_per_byte,
                static_cast<long long>(r.tokens));
  };
  auto print_sample = [&](int64_t step) {
    if (stage ? rank != 0 : !leader) return;  // a pipeline samples through replica 0's stages
    std::vector<int64_t> prompt;
    for (int32_t id : run.tokenizer.encode(c.eval.prompt)) prompt.push_back(id);
    if (prompt.empty()) return;
    Generator gen(static_cast<uint64_t>(step));
    const SamplingOptions sampling{.temperature = c.eval.temperature, .top_k = c.eval.top_k, .top_p = c.eval.top_p};
    const std::vector<int64_t> out =
        stage ? generate(*stage, prompt, c.eval.sample_tokens, sampling, gen, run.tokenizer.eos_id())
              : generate(model, prompt, c.eval.sample_tokens, sampling, gen, run.tokenizer.eos_id());
    if (!leader) return;
    std::vector<int32_t> ids(out.begin(), out.end());
    std::printf("%ssample @ step %lld: %s%s\n", terminal ? "\n" : "", static_cast<long long>(step),
                c.eval.prompt.c_str(), run.tokenizer.decode(ids).c_str());
  };

  // The Chrome trace (log.trace): each rank's spans of the first log.trace_steps steps, on a
  // time base started together after a barrier; rank 0 writes the file.
  std::vector<PipelineSpan> trace;
  double trace_origin = 0;
  const int64_t trace_end = c.log.trace.empty() ? run.start_step : std::min(c.train.steps, run.start_step + c.log.trace_steps);
  auto trace_span = [&](const std::string& name, const std::string& category, double start_us) {
    if (!trace_origin) return;
    const double end = steady_microseconds();
    trace.push_back({name, category, start_us - trace_origin, end - start_us});
  };
  auto finish_trace = [&] {
    if (!trace_origin) return;
    if (stage) {
      trace.insert(trace.end(), stage->spans().begin(), stage->spans().end());
      stage->stop_trace();
    }
    const std::string label = stage ? fmt::format("rank {}: stage {}, replica {}", world_group->rank(), stage->stage(), rank)
                                    : fmt::format("rank {}", world_group->rank());
    write_chrome_trace(c.log.trace, *world_group, trace, label);
    if (leader) std::printf("trace of steps %lld-%lld written to %s\n", static_cast<long long>(run.start_step + 1),
                            static_cast<long long>(trace_end), c.log.trace.c_str());
    trace_origin = 0;
  };
  if (trace_end > run.start_step) {
    world_group->barrier();
    trace_origin = steady_microseconds();
    if (stage) stage->start_trace(trace_origin);
  }
  // The pipeline's idle share per step, from the second step on (the first includes warm-up).
  std::vector<double> idle_per_step;  // this stage's idle share of each step after the first
  int64_t peak_micro_batches = 0;

  for (int64_t step = run.start_step; step < c.train.steps;) {
    const auto step_start = Clock::now();
    const double lr = schedule.at(step);
    optimizer.set_lr(lr);
    const double step_start_us = steady_microseconds();
    double loss = gradient_step.run(loader.next(), optimizer.loss_scale());
    if (!stage) trace_span("forward + backward", "step", step_start_us);
    if (stage && step > run.start_step) {
      idle_per_step.push_back(stage->last_step().idle_fraction());
    }
    if (stage) peak_micro_batches = std::max(peak_micro_batches, stage->last_step().peak_micro_batches);
    const std::string injected = trigger_fault(fault, step + 1, world_group->rank());
    if (injected == "nan") loss = std::nan("");
    if (injected == "inf") loss = std::numeric_limits<double>::infinity();
    if (injected == "spike") loss *= 10.0;
    if (!optimizer.gradients_fit()) {  // fp16 overflow: the scale backs off and this step is skipped
      log_metrics({{"step", step + 1}, {"event", "loss_scale_backoff"}, {"loss_scale", optimizer.loss_scale()}});
      ++step;
      outcome.step = step;
      continue;
    }
    const double norm = optimizer.gradient_norm();
    int nonfinite = std::isfinite(loss) && std::isfinite(norm) ? 0 : 1;
    if (world > 1) {  // decided together: every rank skips or stops at the same step
      Tensor flag = from_data<int32_t>({nonfinite});
      world_group->all_reduce(flag, ReduceOp::max);
      nonfinite = flag.item<int32_t>();
    }
    if (nonfinite != 0) {
      log_metrics({{"step", step + 1}, {"event", "nonfinite"}, {"loss", loss}, {"grad_norm", norm},
                   {"policy", c.train.on_nonfinite}});
      optimizer.skip();
      if (c.train.on_nonfinite == "stop") {
        save(step);  // the weights before this step
        TSU_FAIL(Error, "[train] non-finite loss ({}) or gradient norm ({}) at step {}; stopped after saving {}", loss,
                 norm, step + 1, outcome.checkpoint);
      }
      if (leader)
        std::printf("%sstep %lld: non-finite loss or gradient norm, update skipped\n", terminal ? "\n" : "",
                    static_cast<long long>(step + 1));
    } else if (spikes.is_spike(loss)) {
      const double threshold = spikes.threshold();
      log_metrics({{"step", step + 1}, {"event", "loss_spike"}, {"loss", loss}, {"window_mean", spikes.mean()},
                   {"window_std", spikes.std()}, {"threshold", threshold}, {"policy", c.train.on_spike}});
      if (c.train.on_spike == "stop") {
        optimizer.skip();
        save(step);  // the weights before this step
        TSU_FAIL(Error, "[train] loss spike at step {}: {:.4f} above the threshold {:.4f} (window mean {:.4f}); stopped "
                 "after saving {}", step + 1, loss, threshold, spikes.mean(), outcome.checkpoint);
      }
      if (leader)
        std::printf("%sstep %lld: loss spike %.4f above %.4f (window mean %.4f), %s\n", terminal ? "\n" : "",
                    static_cast<long long>(step + 1), loss, threshold, spikes.mean(),
                    c.train.on_spike == "skip" ? "update skipped" : "logged");
      if (c.train.on_spike == "skip") {
        optimizer.skip();
      } else {
        optimizer.step(norm);
        spikes.add(loss);
      }
    } else {
      const double update_start = steady_microseconds();
      optimizer.step(norm);
      trace_span("optimizer", "optimizer", update_start);
      spikes.add(loss);
    }
    ++step;
    if (step == trace_end) finish_trace();
    const double step_seconds = seconds_since(step_start);
    train_seconds += step_seconds;
    outcome.step = step;
    outcome.loss = loss;
    const double tokens_per_s = static_cast<double>(c.train.global_batch * c.data.seq_len) / step_seconds;
    const nlohmann::json record = {{"step", step},
                                   {"loss", loss},
                                   {"lr", lr},
                                   {"grad_norm", norm},
                                   {"tokens_per_s", tokens_per_s},
                                   {"mfu", flops_per_step / step_seconds / 1e9 / (peak_gflops * world)},
                                   {"memory_mb", device.is_cpu() ? peak_rss_mb()
                                                                 : memory_stats(device).peak_allocated / 1048576.0},
                                   {"step_seconds", step_seconds},
                                   {"elapsed_seconds", seconds_since(started)}};
    log_metrics(record);
    const int64_t done_here = step - run.start_step;
    if (leader && (step % c.log.every == 0 || step == c.train.steps))
      print_progress(record, c.train.steps, train_seconds / static_cast<double>(done_here) * static_cast<double>(c.train.steps - step),
                     terminal);
    if (c.eval.every > 0 && step % c.eval.every == 0 && step < c.train.steps) run_eval(step);
    if (c.eval.sample_every > 0 && step % c.eval.sample_every == 0) print_sample(step);
    if (c.checkpoint.every > 0 && step % c.checkpoint.every == 0) save(step);
    // Stopping is decided together, so that every rank stops after the same step.
    int stop = signals.requested() ? 1 : 0;
    if (c.train.max_minutes > 0 && seconds_since(started) > c.train.max_minutes * 60.0) stop = std::max(stop, 2);
    if (world > 1) {
      Tensor flag = from_data<int32_t>({stop});
      world_group->all_reduce(flag, ReduceOp::max);
      stop = flag.item<int32_t>();
    }
    if (stop != 0) {
      outcome.stop_reason = stop == 1 ? "signal" : "time limit";
      break;
    }
  }
  finish_trace();  // a run stopped before the traced steps ended
  if (stage) {
    // Each stage's median idle share over the steps (a step that the machine held up does not
    // move it, as it would a mean) and peak of in-flight micro-batches, gathered to rank 0.
    std::sort(idle_per_step.begin(), idle_per_step.end());
    const size_t n = idle_per_step.size();
    const double median_idle =
        n == 0 ? 0.0 : n % 2 ? idle_per_step[n / 2] : (idle_per_step[n / 2 - 1] + idle_per_step[n / 2]) / 2;
    Tensor mine = from_data<double>({median_idle,
                                     static_cast<double>(peak_micro_batches),
                                     memory_stats().peak_allocated / 1048576.0});
    Tensor all = zeros({3 * world}, {.dtype = DType::f64});
    world_group->all_gather(mine, all);
    if (leader) {
      const double* v = all.data<double>();
      const double ideal = ideal_bubble_fraction(pp, accumulation);
      std::string idle, held, memory;
      std::vector<double> idles;
      for (int s = 0; s < pp; ++s) {  // replica 0's stages: world ranks 0 .. pp - 1
        idles.push_back(v[3 * s]);
        idle += fmt::format("{}{:.1f}%", s ? " " : "", 100 * v[3 * s]);
        held += fmt::format("{}{:.0f}", s ? " " : "", v[3 * s + 1]);
        memory += fmt::format("{}{:.1f}", s ? " " : "", v[3 * s + 2]);
      }
      std::printf("pipeline: idle per stage (median over steps) %s (ideal (P-1)/(M+P-1) = %.1f%%); micro-batches "
                  "held at once %s; peak tensor memory per stage %s MiB\n",
                  idle.c_str(), 100 * ideal, held.c_str(), memory.c_str());
      log_metrics({{"step", outcome.step}, {"event", "pipeline"}, {"idle_per_stage", idles},
                   {"ideal_idle", ideal}});
    }
  }
  outcome.finished = outcome.step >= c.train.steps;
  if (outcome.finished) run_eval(outcome.step);
  if (last_saved != outcome.step) save(outcome.step);
  if (const auto comm = gradient_step.communication(); comm && leader && comm->communication_seconds > 0)
    std::printf("data parallel: %.1f MB all-reduced in %lld buckets; %.0f%% of the communication hidden behind backward\n",
                comm->bytes / 1e6, static_cast<long long>(comm->buckets),
                100.0 * (1.0 - comm->exposed_seconds / comm->communication_seconds));
  if (leader)
    std::printf("%s at step %lld; checkpoint %s\n",
              outcome.finished ? "finished" : ("stopped (" + outcome.stop_reason + ")").c_str(),
              static_cast<long long>(outcome.step), outcome.checkpoint.c_str());
  return outcome;
}

}  // namespace tsumugi

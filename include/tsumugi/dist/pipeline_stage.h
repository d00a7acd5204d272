#pragma once
/// Pipeline parallelism at run time: one process runs one stage of a CausalLM (a contiguous run
/// of blocks; the embedding on the first stage, the final norm, head and loss on the last) and
/// passes activations forward and their gradients backward to its neighbours with non-blocking
/// sends and receives, in the order a schedule (GPipe or 1F1B, pipeline.h) gives.
///
/// Every rank builds the whole model, initialised identically (or loaded from a checkpoint); a
/// stage computes and trains only its own piece. release_other_weights() then frees the other
/// pieces, so that each rank holds only its stage. The whole model exists only across the
/// stages from then on: gather_weights() assembles it on one rank (a checkpoint),
/// forward_loss_sum() evaluates through the pipeline, and decode() generates through it.
///
/// Tied embeddings: the first stage uses the token embedding, the last stage the same matrix as
/// its output head. Both hold a copy and both update it; the two gradient contributions are
/// summed between them so that the copies stay bitwise equal.
#include <tsumugi/core/nn/transformer.h>
#include <tsumugi/dist/pipeline.h>
#include <tsumugi/dist/process_group.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tsumugi {

/// A timed piece of a stage's work, for the Chrome trace.
struct PipelineSpan {
  std::string name;      ///< "F3", "B3", "recv", "send", "optimizer", ...
  std::string category;  ///< forward | backward | recv | send | optimizer | step
  double start_us = 0;   ///< since the trace's origin
  double duration_us = 0;
};

struct PipelineOptions {
  PipelineScheduleKind schedule = PipelineScheduleKind::one_f_one_b;
  /// First layer of each stage (size pp, starting at 0); empty: balance_layers().
  std::vector<int64_t> stage_starts;
  /// Deterministic mode: the tied embedding's two contributions are summed per micro-batch
  /// (the first stage adds the head's gradient of micro-batch m to its own before its leaf is
  /// taken), so that the tree accumulator sees exactly the single-process leaves.
  bool per_micro_batch_tied_sum = false;
  /// Move activations and gradients in blocking send_recv batches (pipeline_exchanges) instead of
  /// non-blocking sends and receives posted ahead: what NCCL needs, whose operations each wait
  /// for their peer's. The trainer sets it for a pipeline group over NCCL.
  bool grouped_transport = false;
};

/// What one step cost this stage.
struct PipelineStepStats {
  double step_seconds = 0;      ///< from the first action to the last send completing
  double makespan_seconds = 0;  ///< the pipeline's step: the longest step_seconds of its stages
  double compute_seconds = 0;   ///< forward and backward passes
  double wait_seconds = 0;      ///< blocked on receives and sends
  int64_t peak_micro_batches = 0;  ///< most micro-batches whose activations were held at once
  /// The stage's idle share of the pipeline's step: 1 - compute / makespan. A stage that is done
  /// early (the last stage, while the first runs its last backward pass) idles until the step
  /// ends; (P - 1) / (M + P - 1) counts that time too.
  double idle_fraction() const { return makespan_seconds > 0 ? 1.0 - compute_seconds / makespan_seconds : 0.0; }
};

/// Cuts a model's layers into `stages` groups balanced by training FLOPs, counting the head's
/// matrix product on the last layer (its cost is not small next to a block in small models).
std::vector<int64_t> balance_layers(const ModelConfig& config, int64_t seq_len, int64_t stages);

class PipelineStage {
 public:
  /// `group`: this pipeline's stages, group rank = stage. Throws ValueError when the cut does
  /// not fit the model (more stages than layers, starts not increasing from 0).
  PipelineStage(CausalLM& model, std::shared_ptr<ProcessGroup> group, PipelineOptions options = {});

  int64_t stage() const { return stage_; }
  int64_t stages() const { return stages_; }
  bool is_first() const { return stage_ == 0; }
  bool is_last() const { return stage_ == stages_ - 1; }
  /// Blocks [layer_begin, layer_end) run here.
  int64_t layer_begin() const { return begin_; }
  int64_t layer_end() const { return end_; }
  const std::vector<int64_t>& stage_starts() const { return starts_; }
  /// The model's context length (positions a cache may hold).
  int64_t context() const { return model_.config().context; }
  ProcessGroup& group() const { return *group_; }

  /// The parameters this stage trains, in the model's order (the tied embedding on the first
  /// and on the last stage).
  const NamedTensors& parameters() const { return params_; }
  /// The stage that owns a model parameter: reports it in the gradient norm and provides it
  /// when the whole model is gathered. The tied embedding belongs to the first stage.
  int64_t owner(const std::string& name) const;
  /// Whether this stage's copy of parameter `name` is a second copy it trains but does not own
  /// (the tied embedding on the last stage).
  bool is_tied_copy(const std::string& name) const;

  /// Called around each micro-batch's backward pass: (micro-batch, whether it is this stage's
  /// last backward of the step).
  using BackwardHook = std::function<void(int64_t micro_batch, bool last)>;

  /// One step over micro-batches of `micro_batch` rows of `inputs` and `targets` (M*mb, T) (the
  /// first stage reads the inputs, the last the targets; the others may pass empty tensors of
  /// the right shape). Each micro-batch's mean cross-entropy (plus z-loss) is back-propagated
  /// times `loss_weight`. Returns the sum of the micro-batches' losses, on every stage.
  double run(const Tensor& inputs, const Tensor& targets, int64_t micro_batch, double loss_weight, double z_loss,
             const BackwardHook& before_backward = {}, const BackwardHook& after_backward = {});
  /// After the step's gradients are final on each stage (data-parallel reduction done): makes
  /// the tied embedding's gradient the sum of both contributions on the first and last stage.
  /// With per_micro_batch_tied_sum the first stage already has the sum and sends it over.
  void finish_tied_gradients();
  /// The global gradient norm of the whole model (each parameter counted once, at its owner),
  /// bitwise equal to grad_norm() over the whole model in one process. Collective.
  double gradient_norm() const;
  /// Frees the storage of every model parameter this stage does not train (Module::
  /// release_parameters): from now on the rank holds only its stage. Call once the weights are
  /// final on every rank (after initialisation, a resume and the data-parallel broadcast).
  void release_other_weights();
  bool holds_whole_model() const { return !released_; }
  /// Parameter elements this stage holds (its own pieces once released).
  int64_t held_parameters() const;
  /// The whole model's weights on pipeline rank `root`, each parameter from its owner's entry in
  /// `local` (this stage's weights by name: the model's state_dict, or fp32 master weights), as
  /// contiguous f32 CPU tensors; an empty dict on the other ranks. Collective.
  StateDict gather_weights(const StateDict& local, int root = 0) const;
  /// Completes a stage-local AdamW state (this stage's "exp_avg.<name>" ... and "step") into the
  /// whole model's on pipeline rank `root`, every entry from its owner; an empty dict on the
  /// other ranks. Collective.
  StateDict gather_optimizer_state(const StateDict& local, int root = 0) const;
  /// Forward only, through the pipeline (evaluation mode, no gradients): the sum over the tokens
  /// of `inputs` (B, T) of the cross-entropy against `targets`, computed as one process computes
  /// it (the mean times the count), on the last stage; 0 on the others. Collective.
  double forward_loss_sum(const Tensor& inputs, const Tensor& targets);
  /// Incremental decoding through the pipeline: runs `ids` (one sequence) through every stage's
  /// blocks, continuing each stage's `cache` (its own layers), and returns the last position's
  /// logits (V, on the CPU) on the last stage, an undefined tensor on the others. The same bits
  /// as CausalLM::forward with a cache in one process. Collective.
  Tensor decode(const std::vector<int64_t>& ids, KVCache& cache);

  const PipelineStepStats& last_step() const { return stats_; }
  /// Records spans from now on (times relative to `origin_us` on the steady clock).
  void start_trace(double origin_us) {
    tracing_ = true;
    trace_origin_us_ = origin_us;
  }
  void stop_trace() { tracing_ = false; }
  std::vector<PipelineSpan>& spans() { return spans_; }

 private:
  // Records a span when tracing.
  void add_span(std::string name, std::string category, double start_us, double end_us);

  CausalLM& model_;
  std::shared_ptr<ProcessGroup> group_;
  PipelineOptions options_;
  int64_t stage_ = 0, stages_ = 1, begin_ = 0, end_ = 0;
  std::vector<int64_t> starts_;
  NamedTensors params_;
  NamedTensors all_params_;                // the whole model's, in its order
  std::vector<Shape> all_shapes_;          // their shapes, also once released
  bool released_ = false;
  std::map<std::string, int64_t> owners_;  // every parameter's owning stage
  std::string tied_name_;  // the tied embedding's name, when the model ties and pp > 1
  PipelineStepStats stats_;
  bool tracing_ = false;
  double trace_origin_us_ = 0;
  std::vector<PipelineSpan> spans_;
};

/// Microseconds on the steady clock (the trace's time base).
double steady_microseconds();

/// Writes a Chrome trace (chrome://tracing, Perfetto) of every rank's spans: rank 0 of `group`
/// gathers them and writes `path`; `labels[r]` names rank r's track. Collective.
void write_chrome_trace(const std::string& path, ProcessGroup& group, const std::vector<PipelineSpan>& spans,
                        const std::string& label);

}  // namespace tsumugi

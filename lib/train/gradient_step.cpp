#include "gradient_step.h"

#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>

#include "core/check.h"

namespace tsumugi {
namespace {

bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

}  // namespace

GradientStep::GradientStep(CausalLM& model, const TrainConfig& config, std::shared_ptr<ProcessGroup> group,
                           PipelineStage* stage)
    : model_(model), config_(config), group_(std::move(group)), stage_(stage) {
  const int64_t dp = group_->size();
  const int64_t micro_batches = config.train.global_batch / config.train.micro_batch;
  TSU_CHECK(config.train.global_batch % (config.train.micro_batch * dp) == 0, ConfigError,
            "[config] train.global_batch ({}) must be a multiple of train.micro_batch ({}) x data-parallel ranks ({})",
            config.train.global_batch, config.train.micro_batch, dp);
  if (config.parallel.deterministic) {
    TSU_CHECK(power_of_two(dp) && power_of_two(micro_batches), ConfigError,
              "[config] parallel.deterministic needs a power-of-two number of data-parallel ranks ({}) and of "
              "micro-batches per step (train.global_batch / train.micro_batch = {})",
              dp, micro_batches);
    std::vector<Tensor> params;
    if (!stage) {
      params = model.parameters();
    } else {
      // The last stage's copy of a tied embedding gets the first stage's summed gradient instead.
      for (const auto& [name, p] : stage->parameters())
        if (!stage->is_tied_copy(name)) params.push_back(p);
    }
    tree_ = std::make_unique<TreeGradientAccumulator>(params);
  } else if (dp > 1 && (config.parallel.zero == 0 || stage)) {
    // ZeRO-1 reduce-scatters in the optimizer instead, except under a pipeline, whose gradient
    // norm needs each stage's whole reduced gradient.
    data_parallel_ = stage ? std::make_unique<DataParallel>(stage->parameters(), group_)
                           : std::make_unique<DataParallel>(model, group_);
  }
}

double GradientStep::run_pipeline(const Batch& batch, double loss_scale) {
  const int64_t local_micro_batches = batch.inputs.size(0) / config_.train.micro_batch;
  const int64_t total_micro_batches = local_micro_batches * group_->size();
  // The same loss weights as one process: each micro-batch's own gradient (a tree leaf), or the
  // mean over this rank's micro-batches.
  const double weight = tree_ || local_micro_batches == 1 ? loss_scale : loss_scale / static_cast<double>(local_micro_batches);
  PipelineStage::BackwardHook before, after;
  if (data_parallel_) before = [this](int64_t, bool last) { data_parallel_->set_gradient_sync(last); };
  if (tree_) after = [this](int64_t, bool) { tree_->add(); };
  const double loss_sum = stage_->run(batch.inputs, batch.targets, config_.train.micro_batch, weight,
                                      config_.train.z_loss, before, after);
  if (tree_) tree_->finish(*group_, 1.0 / static_cast<double>(total_micro_batches));
  else if (data_parallel_) data_parallel_->synchronize_gradients();
  stage_->finish_tied_gradients();
  Tensor loss = from_data<double>({loss_sum});
  if (group_->size() > 1) {
    if (config_.parallel.deterministic) group_->all_reduce_tree(loss);
    else group_->all_reduce(loss);
  }
  return loss.item<double>() / static_cast<double>(total_micro_batches);
}

double GradientStep::run(const Batch& batch, double loss_scale) {
  if (stage_) return run_pipeline(batch, loss_scale);
  const int64_t micro = config_.train.micro_batch;
  const int64_t local_micro_batches = batch.inputs.size(0) / micro;
  const int64_t vocab = model_.config().vocab;
  const Device device = model_.device();
  // On a GPU the batch goes over once, asynchronously from pinned memory, and the losses stay on
  // the device until the end of the step: no synchronisation per micro-batch.
  const Tensor all_inputs = device.is_cpu() ? batch.inputs : batch.inputs.pin_memory().to(device, true);
  const Tensor all_targets = device.is_cpu() ? batch.targets : batch.targets.pin_memory().to(device, true);
  Tensor loss_sum = zeros({}, {.dtype = DType::f64, .device = device});
  for (int64_t m = 0; m < local_micro_batches; ++m) {
    const Tensor inputs = all_inputs.narrow(0, m * micro, micro);
    const Tensor targets = all_targets.narrow(0, m * micro, micro).contiguous();
    const Tensor loss = cross_entropy(model_.forward(inputs).view({-1, vocab}), targets.view({-1}), -100,
                                      config_.train.z_loss);
    {
      NoGradGuard no_grad;
      loss_sum = loss_sum + loss.detach().to(DType::f64);
    }
    const Tensor scaled = loss_scale == 1.0 ? loss : loss * loss_scale;
    if (tree_) {
      scaled.backward();  // each micro-batch's own gradient: a leaf of the tree
      tree_->add();
    } else {
      if (data_parallel_) data_parallel_->set_gradient_sync(m + 1 == local_micro_batches);
      (local_micro_batches == 1 ? scaled : scaled * (1.0 / static_cast<double>(local_micro_batches))).backward();
    }
  }
  // Mean over all micro-batches of all ranks (a power of two in deterministic mode: exact scaling).
  const int64_t total_micro_batches = local_micro_batches * group_->size();
  if (tree_) tree_->finish(*group_, 1.0 / static_cast<double>(total_micro_batches));
  else if (data_parallel_) data_parallel_->synchronize_gradients();
  Tensor loss = from_data<double>({loss_sum.item<double>()});
  if (group_->size() > 1) {
    if (config_.parallel.deterministic) group_->all_reduce_tree(loss);
    else group_->all_reduce(loss);
  }
  return loss.item<double>() / static_cast<double>(total_micro_batches);
}

std::optional<DataParallel::Stats> GradientStep::communication() const {
  if (!data_parallel_) return std::nullopt;
  return data_parallel_->stats();
}

}  // namespace tsumugi

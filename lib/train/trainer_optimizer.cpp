#include "trainer_optimizer.h"

#include "core/check.h"

namespace tsumugi {

TrainerOptimizer::TrainerOptimizer(CausalLM& model, const TrainConfig& c, std::shared_ptr<ProcessGroup> group,
                                   const PipelineStage* stage)
    : stage_(stage), grad_clip_(c.train.grad_clip) {
  const NamedTensors params = stage ? stage->parameters() : model.named_parameters();
  for (const auto& [name, p] : params) params_.push_back(p);
  const AdamWOptions options{.lr = c.train.lr, .beta1 = c.train.beta1, .beta2 = c.train.beta2, .eps = c.train.eps,
                             .weight_decay = c.train.weight_decay};
  if (c.parallel.zero == 1 && group->size() > 1) {
    // Deterministic mode: the tree accumulator already summed the gradients; a pipeline stage:
    // the data-parallel all-reduce did (the norm needs every stage's whole gradient).
    const bool reduced = c.parallel.deterministic || stage != nullptr;
    grad_scale_ = reduced ? 1.0 : 1.0 / static_cast<double>(group->size());
    // Default mode: each rank's .grad is its own; the fp16 overflow check must agree over ranks.
    if (!reduced) flag_group_ = group;
    zero_ = std::make_unique<ZeroAdamW>(params, options, std::move(group), reduced);
  } else {
    adamw_ = std::make_unique<AdamW>(params, options);
  }
  if (c.precision.compute == "f16") scaler_ = std::make_unique<DynamicLossScaler>();
}

bool TrainerOptimizer::gradients_fit() {
  if (!scaler_) return true;
  bool finite = grads_finite(params_);
  if (flag_group_) {
    Tensor overflowed = from_data<int32_t>({finite ? 0 : 1});
    flag_group_->all_reduce(overflowed, ReduceOp::max);
    finite = overflowed.item<int32_t>() == 0;
  }
  scaler_->update(finite);
  if (!finite) skip();
  return finite;
}

void TrainerOptimizer::set_lr(double lr) {
  if (zero_) zero_->set_lr(lr);
  else adamw_->set_lr(lr);
}

double TrainerOptimizer::gradient_norm() {
  if (stage_) {
    if (zero_) zero_->reduce_gradients(grad_scale_ / loss_scale());  // this rank's shard; the norm is the whole model's
    return stage_->gradient_norm() / loss_scale();
  }
  if (zero_) return zero_->reduce_gradients(grad_scale_ / loss_scale());
  return grad_norm(params_) / loss_scale();
}

void TrainerOptimizer::step(double norm) {
  const double clip = grad_clip_ > 0 ? clip_coefficient(norm, grad_clip_) : 1.0;
  if (zero_) {
    zero_->update(clip);
    zero_->zero_grad();
  } else {
    // Unscaled and clipped inside the update, in fp32 whatever the gradients' dtype: the same
    // arithmetic as ZeRO-1's (clip / scale is exact, scales being powers of two).
    adamw_->step(clip / loss_scale());
    adamw_->zero_grad();
  }
}

void TrainerOptimizer::skip() {
  for (const Tensor& p : params_) p.zero_grad();
}

namespace {
StateDict to_host(StateDict state) {
  for (auto& [name, tensor] : state)
    if (!tensor.device().is_cpu()) tensor = tensor.to(Device::cpu());
  return state;
}
}  // namespace

StateDict TrainerOptimizer::state_dict() {
  StateDict state = zero_ ? zero_->state_dict() : adamw_->state_dict();
  if (scaler_) state.merge(scaler_->state_dict());
  return to_host(std::move(state));
}

void TrainerOptimizer::load_master_weights(const StateDict& weights) {
  if (zero_) zero_->load_master_weights(weights);
  else adamw_->load_master_weights(weights);
}

StateDict TrainerOptimizer::model_weights(const CausalLM& model) const {
  StateDict weights = model.state_dict();
  for (auto& [name, master] : zero_ ? zero_->master_weights() : adamw_->master_weights()) weights[name] = master;
  for (auto& [name, tensor] : weights) {
    Tensor host = tensor.to(Device::cpu());
    if (host.dtype() != DType::f32) host = host.to(DType::f32);
    tensor = host;
  }
  return weights;
}

void TrainerOptimizer::load_state_dict(const StateDict& state) {
  if (zero_) zero_->load_state_dict(state);
  else adamw_->load_state_dict(state);
  if (scaler_ && state.count("loss_scaler.scale")) scaler_->load_state_dict(state);
}

}  // namespace tsumugi

#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/dist/zero.h>

#include <cmath>

#include "core/check.h"

namespace tsumugi {
namespace {

// Calls f(param index, offset in the parameter, offset in the shard, length) for every piece of
// a parameter that lies in [begin, end).
template <class F>
void for_each_piece(const std::vector<int64_t>& offsets, const NamedTensors& params, int64_t begin, int64_t end, F&& f) {
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t p_begin = offsets[i], p_end = offsets[i] + params[i].second.numel();
    const int64_t lo = std::max(begin, p_begin), hi = std::min(end, p_end);
    if (lo < hi) f(i, lo - p_begin, lo - begin, hi - lo);
  }
}

}  // namespace

ZeroAdamW::ZeroAdamW(const NamedTensors& params, AdamWOptions options, std::shared_ptr<ProcessGroup> group,
                     bool gradients_reduced)
    : params_(params), options_(options), group_(std::move(group)), gradients_reduced_(gradients_reduced) {
  for (const auto& [name, p] : params_) {
    TSU_CHECK(p.dtype() == DType::f32 && p.is_contiguous() && p.device().is_cpu(), ValueError,
              "[zero] parameter {} must be a contiguous f32 cpu tensor", name);
    offsets_.push_back(total_);
    total_ += p.numel();
  }
  const int64_t ranks = group_->size();
  chunk_ = (total_ + ranks - 1) / ranks;
  begin_ = std::min(total_, chunk_ * group_->rank());
  end_ = std::min(total_, begin_ + chunk_);
  exp_avg_ = zeros({chunk_});
  exp_avg_sq_ = zeros({chunk_});
  grad_shard_ = zeros({chunk_});
}

double ZeroAdamW::reduce_gradients(double grad_scale) {
  NoGradGuard no_grad;
  if (gradients_reduced_) {
    // Every rank holds the whole gradient: the norm over it, as the replicated optimizer computes it.
    grad_shard_.zero_();
    for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t from, int64_t to, int64_t n) {
      const Tensor g = params_[i].second.grad();
      if (g.defined()) grad_shard_.narrow(0, to, n).copy_(g.reshape({-1}).narrow(0, from, n));
    });
    if (grad_scale != 1.0) grad_shard_ = grad_shard_ * grad_scale;
    std::vector<Tensor> all;
    for (const auto& [name, p] : params_) all.push_back(p);
    return grad_norm(all) * std::fabs(grad_scale);
  }
  Tensor flat = zeros({chunk_ * group_->size()});
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = params_[i].second.grad();
    if (g.defined()) flat.narrow(0, offsets_[i], params_[i].second.numel()).copy_(g.reshape({-1}));
  }
  group_->reduce_scatter(flat, grad_shard_);
  if (grad_scale != 1.0) grad_shard_ = grad_shard_ * grad_scale;
  // Sum of squares of this shard in fixed blocks, then over ranks.
  double squares = 0;
  const float* g = grad_shard_.data<float>();
  for (int64_t j = 0; j < end_ - begin_; ++j) squares += static_cast<double>(g[j]) * g[j];
  Tensor total = from_data<double>({squares});
  group_->all_reduce(total);
  return std::sqrt(total.item<double>());
}

void ZeroAdamW::update(double clip_scale) {
  NoGradGuard no_grad;
  ++step_;
  if (clip_scale != 1.0) grad_shard_ = grad_shard_ * clip_scale;
  const AdamWStepConstants constants = AdamWStepConstants::at(options_, step_);
  Tensor weights = zeros({chunk_});
  for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t from, int64_t to, int64_t n) {
    const Tensor& p = params_[i].second;
    float* w = weights.data<float>() + to;
    std::copy_n(p.data<float>() + from, n, w);
    const float decay = p.dim() >= 2 ? static_cast<float>(1.0 - options_.lr * options_.weight_decay) : 1.0f;
    adamw_update(w, exp_avg_.data<float>() + to, exp_avg_sq_.data<float>() + to, grad_shard_.data<float>() + to, n,
                 constants, decay);
  });
  Tensor gathered = empty({chunk_ * group_->size()});
  group_->all_gather(weights, gathered);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor p = params_[i].second;
    p.view({-1}).copy_(gathered.narrow(0, offsets_[i], p.numel()));
  }
}

void ZeroAdamW::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

StateDict ZeroAdamW::state_dict() const {
  NoGradGuard no_grad;
  StateDict state;
  for (const Tensor* moments : {&exp_avg_, &exp_avg_sq_}) {
    Tensor all = empty({chunk_ * group_->size()});
    group_->all_gather(*moments, all);
    const std::string prefix = moments == &exp_avg_ ? "exp_avg." : "exp_avg_sq.";
    for (size_t i = 0; i < params_.size(); ++i)
      state.emplace(prefix + params_[i].first,
                    all.narrow(0, offsets_[i], params_[i].second.numel()).view(params_[i].second.shape()).clone());
  }
  state.emplace("step", from_data<int64_t>({step_}, {1}));
  return state;
}

void ZeroAdamW::load_state_dict(const StateDict& state) {
  NoGradGuard no_grad;
  for (Tensor* moments : {&exp_avg_, &exp_avg_sq_}) {
    const std::string prefix = moments == &exp_avg_ ? "exp_avg." : "exp_avg_sq.";
    moments->zero_();
    for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t from, int64_t to, int64_t n) {
      auto it = state.find(prefix + params_[i].first);
      TSU_CHECK(it != state.end(), ValueError, "[zero] optimizer state has no '{}'", prefix + params_[i].first);
      TSU_CHECK(it->second.numel() == params_[i].second.numel(), ValueError, "[zero] '{}' has {} elements, expected {}",
                it->first, it->second.numel(), params_[i].second.numel());
      moments->narrow(0, to, n).copy_(it->second.reshape({-1}).narrow(0, from, n));
    });
  }
  auto step = state.find("step");
  TSU_CHECK(step != state.end(), ValueError, "[zero] optimizer state has no 'step'");
  step_ = step->second.item<int64_t>();
}

}  // namespace tsumugi

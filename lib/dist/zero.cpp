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

// The elements [from, from + n) of a parameter (or of a tensor of its shape), flat.
Tensor flat_piece(const Tensor& t, int64_t from, int64_t n) { return t.reshape({-1}).narrow(0, from, n); }

}  // namespace

ZeroAdamW::ZeroAdamW(const NamedTensors& params, AdamWOptions options, std::shared_ptr<ProcessGroup> group,
                     bool gradients_reduced)
    : params_(params), options_(options), group_(std::move(group)), gradients_reduced_(gradients_reduced) {
  if (!params_.empty()) {
    device_ = params_.front().second.device();
    gather_dtype_ = params_.front().second.dtype();
  }
  for (const auto& [name, p] : params_) {
    TSU_CHECK((p.dtype() == DType::f32 || p.dtype() == DType::bf16 || p.dtype() == DType::f16) && p.is_contiguous(),
              ValueError, "[zero] parameter {} must be a contiguous f32, bf16 or f16 tensor (got {})", name,
              dtype_name(p.dtype()));
    TSU_CHECK(p.device() == device_, ValueError, "[zero] parameter {} is on {} but parameter {} is on {}", name,
              p.device().str(), params_.front().first, device_.str());
    if (p.dtype() != gather_dtype_) gather_dtype_ = DType::f32;
    if (p.dtype() != DType::f32) low_precision_ = true;
    offsets_.push_back(total_);
    total_ += p.numel();
  }
  const int64_t ranks = group_->size();
  chunk_ = (total_ + ranks - 1) / ranks;
  begin_ = std::min(total_, chunk_ * group_->rank());
  end_ = std::min(total_, begin_ + chunk_);
  exp_avg_ = zeros({chunk_}, {.device = device_});
  exp_avg_sq_ = zeros({chunk_}, {.device = device_});
  master_ = zeros({chunk_}, {.device = device_});
  grad_shard_ = zeros({chunk_}, {.device = device_});
}

void ZeroAdamW::refresh_master(bool f32_only) const {
  NoGradGuard no_grad;
  for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t from, int64_t to, int64_t n) {
    const Tensor& p = params_[i].second;
    if (!f32_only || p.dtype() == DType::f32) master_.narrow(0, to, n).copy_(flat_piece(p, from, n));
  });
  master_valid_ = true;
}

double ZeroAdamW::reduce_gradients(double grad_scale) {
  NoGradGuard no_grad;
  grad_scale_ = grad_scale;
  if (gradients_reduced_) {
    // Every rank holds the whole gradient: the norm over it, as the replicated optimizer computes it.
    grad_shard_.zero_();
    for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t from, int64_t to, int64_t n) {
      const Tensor g = params_[i].second.grad();
      if (g.defined()) grad_shard_.narrow(0, to, n).copy_(flat_piece(g, from, n));
    });
    std::vector<Tensor> all;
    for (const auto& [name, p] : params_) all.push_back(p);
    return grad_norm(all) * std::fabs(grad_scale);
  }
  // The sum over ranks in fp32 whatever the gradients' dtype, so bf16 gradients are added unrounded.
  Tensor flat = zeros({chunk_ * group_->size()}, {.device = device_});
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = params_[i].second.grad();
    if (g.defined()) flat.narrow(0, offsets_[i], params_[i].second.numel()).copy_(g.reshape({-1}));
  }
  group_->reduce_scatter(flat, grad_shard_);
  Tensor squares = from_data<double>({sum_of_squares(grad_shard_)});  // host memory: over MPI
  group_->all_reduce(squares);
  return std::sqrt(squares.item<double>()) * std::fabs(grad_scale);
}

void ZeroAdamW::update(double clip_scale) {
  NoGradGuard no_grad;
  ++step_;
  refresh_master(/*f32_only=*/master_valid_);
  const float decay = static_cast<float>(1.0 - options_.lr * options_.weight_decay);
  std::vector<AdamWSlice> slices;
  for_each_piece(offsets_, params_, begin_, end_, [&](size_t i, int64_t, int64_t to, int64_t n) {
    slices.push_back({.weights = master_.narrow(0, to, n), .exp_avg = exp_avg_.narrow(0, to, n),
                      .exp_avg_sq = exp_avg_sq_.narrow(0, to, n), .grad = grad_shard_.narrow(0, to, n),
                      .decayed = params_[i].second.dim() >= 2});
  });
  // clip * (1 / scale) is clip / scale exactly for the powers of two that scales are.
  adamw_update(slices, AdamWStepConstants::at(options_, step_), decay, clip_scale * grad_scale_);
  // Gathered in the parameters' dtype (rounded to nearest even, as AdamW writes bf16 weights).
  const Tensor mine = gather_dtype_ == DType::f32 ? master_ : master_.to(gather_dtype_);
  Tensor gathered = empty({chunk_ * group_->size()}, {.dtype = gather_dtype_, .device = device_});
  group_->all_gather(mine, gathered);
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
  auto gather = [&](const Tensor& shard, const std::string& prefix, bool low_precision_only) {
    Tensor all = empty({chunk_ * group_->size()}, {.device = device_});
    group_->all_gather(shard, all);
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& p = params_[i].second;
      if (low_precision_only && p.dtype() == DType::f32) continue;
      state.emplace(prefix + params_[i].first, all.narrow(0, offsets_[i], p.numel()).view(p.shape()).clone());
    }
  };
  gather(exp_avg_, "exp_avg.", false);
  gather(exp_avg_sq_, "exp_avg_sq.", false);
  if (low_precision_) {
    refresh_master(master_valid_);  // before the first step the master weights are the parameters
    gather(master_, "master.", true);
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
      moments->narrow(0, to, n).copy_(flat_piece(it->second, from, n));
    });
  }
  auto step = state.find("step");
  TSU_CHECK(step != state.end(), ValueError, "[zero] optimizer state has no 'step'");
  step_ = step->second.item<int64_t>();
  // A state without master weights (from an f32 run) takes them from the parameters.
  StateDict masters;
  for (const auto& [name, p] : params_) {
    auto it = state.find("master." + name);
    if (p.dtype() != DType::f32 && it != state.end()) masters.emplace(name, it->second);
  }
  master_valid_ = false;
  load_master_weights(masters);
}

StateDict ZeroAdamW::master_weights() const {
  NoGradGuard no_grad;
  StateDict weights;
  Tensor all;
  if (low_precision_) {
    refresh_master(master_valid_);
    all = empty({chunk_ * group_->size()}, {.device = device_});
    group_->all_gather(master_, all);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].second;
    weights.emplace(params_[i].first, p.dtype() == DType::f32
                                          ? p.detach()
                                          : all.narrow(0, offsets_[i], p.numel()).view(p.shape()).clone());
  }
  return weights;
}

void ZeroAdamW::load_master_weights(const StateDict& weights) {
  NoGradGuard no_grad;
  refresh_master(master_valid_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    auto it = weights.find(name);
    if (p.dtype() == DType::f32 || it == weights.end()) continue;
    TSU_CHECK(it->second.shape() == p.shape(), ValueError, "[zero] master weights '{}' have shape {}, expected {}",
              name, shape_str(it->second.shape()), shape_str(p.shape()));
    const Tensor value = it->second.to(device_).to(DType::f32).contiguous();
    for_each_piece(offsets_, params_, begin_, end_, [&](size_t j, int64_t from, int64_t to, int64_t n) {
      if (j == i) master_.narrow(0, to, n).copy_(flat_piece(value, from, n));
    });
    Tensor(p).copy_(value);  // the working weights are the rounded master weights
  }
}

}  // namespace tsumugi

// Bucketed gradient all-reduce overlapped with backward, and the deterministic tree accumulator.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/dist/data_parallel.h>

#include <chrono>
#include <cstring>
#include <mutex>

#include "core/check.h"

namespace tsumugi {
namespace {

using Clock = std::chrono::steady_clock;

// Flattens gradients (missing ones as zeros) into one f32 vector in parameter order.
Tensor flatten_grads(const std::vector<Tensor>& params, int64_t total) {
  // fp32 on the parameters' device: bf16 gradients are summed over micro-batches without rounding.
  Tensor flat = empty({total}, {.dtype = DType::f32, .device = params.empty() ? Device::cpu() : params[0].device()});
  int64_t offset = 0;
  for (const Tensor& p : params) {
    Tensor slot = flat.narrow(0, offset, p.numel());
    if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
    else slot.zero_();
    offset += p.numel();
  }
  return flat;
}

}  // namespace

struct DataParallel::Impl {
  struct Bucket {
    std::vector<size_t> members;  // indices into params
    std::vector<int64_t> offsets;  // of each member in the buffer
    Tensor buffer;
    int ready = 0;
    std::shared_ptr<Work> work;
    Clock::time_point launched;
  };
  std::shared_ptr<ProcessGroup> group;
  std::vector<Tensor> params;
  std::vector<std::pair<size_t, size_t>> slot_of;  // param -> (bucket, member)
  std::vector<Bucket> buckets;
  bool sync = true;
  std::mutex stats_mutex;
  Stats stats;

  explicit Impl(std::shared_ptr<ProcessGroup> g) : group(std::move(g)) {}

  void launch(Bucket& bucket) {
    bucket.launched = Clock::now();
    bucket.work = group->all_reduce_async(bucket.buffer);
    std::lock_guard lock(stats_mutex);
    stats.bytes += static_cast<int64_t>(bucket.buffer.nbytes());
    ++stats.buckets;
  }

  void on_grad_ready(size_t index) {
    if (!sync || group->size() == 1) return;
    auto [b, m] = slot_of[index];
    Bucket& bucket = buckets[b];
    const Tensor& p = params[index];
    bucket.buffer.narrow(0, bucket.offsets[m], p.numel()).copy_(p.grad().reshape({-1}));
    if (++bucket.ready == static_cast<int>(bucket.members.size())) launch(bucket);
  }
};

DataParallel::DataParallel(Module& module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : DataParallel(module.named_parameters(), std::move(group), options) {}

DataParallel::DataParallel(const NamedTensors& params, std::shared_ptr<ProcessGroup> group, DataParallelOptions options)
    : impl_(std::make_unique<Impl>(std::move(group))) {
  // Gradients travel as f32 on the parameters' device (MPI for cpu, NCCL for cuda), whatever
  // the parameters' dtype: bf16 gradients are averaged without rounding.
  Device device = Device::cpu();
  for (auto& [name, p] : params) {
    TSU_CHECK(is_floating(p.dtype()), ValueError, "[data_parallel] parameter {} is {}, not a floating-point tensor", name,
              dtype_name(p.dtype()));
    if (impl_->params.empty()) device = p.device();
    TSU_CHECK(p.device() == device, ValueError, "[data_parallel] parameter {} is on {} but the first one is on {}", name,
              p.device().str(), device.str());
    impl_->params.push_back(p);
  }
  // Buckets in reverse registration order: the backward pass produces the last layers' gradients first.
  const size_t n = impl_->params.size();
  impl_->slot_of.resize(n);
  int64_t bucket_bytes = 0;
  for (size_t k = n; k-- > 0;) {
    if (impl_->buckets.empty() || bucket_bytes >= options.bucket_bytes) {
      impl_->buckets.emplace_back();
      bucket_bytes = 0;
    }
    Impl::Bucket& bucket = impl_->buckets.back();
    const int64_t offset = bucket.offsets.empty() ? 0 : bucket.offsets.back() + impl_->params[bucket.members.back()].numel();
    impl_->slot_of[k] = {impl_->buckets.size() - 1, bucket.members.size()};
    bucket.members.push_back(k);
    bucket.offsets.push_back(offset);
    bucket_bytes += impl_->params[k].numel() * 4;
  }
  for (Impl::Bucket& bucket : impl_->buckets) {
    const int64_t total = bucket.offsets.back() + impl_->params[bucket.members.back()].numel();
    bucket.buffer = empty({total}, {.device = device});
  }
  for (size_t k = 0; k < n; ++k) impl_->params[k].set_grad_ready_hook([impl = impl_.get(), k](const Tensor&) {
    impl->on_grad_ready(k);
  });
}

DataParallel::~DataParallel() {
  for (Tensor& p : impl_->params) p.set_grad_ready_hook(nullptr);
}

uint64_t parameter_checksum(const Module& module) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const Tensor& p : module.parameters()) {
    const Tensor c = p.contiguous().to(Device::cpu());
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  }
  return h;
}

void broadcast_parameters(Module& module, ProcessGroup& group) {
  NoGradGuard no_grad;
  for (const Tensor& p : module.parameters()) {
    Tensor buffer = p.detach();
    group.broadcast(buffer, 0);
  }
  const uint64_t mine = parameter_checksum(module);
  Tensor all = empty({group.size()}, {.dtype = DType::i64});
  group.all_gather(from_data<int64_t>({static_cast<int64_t>(mine)}), all);
  const std::vector<int64_t> sums = all.to_vector<int64_t>();
  for (size_t r = 0; r < sums.size(); ++r)
    TSU_CHECK(sums[r] == sums[0], DistError,
              "[data_parallel] rank {} has different initial weights than rank 0 after the broadcast (checksum {:x} != {:x})",
              r, static_cast<uint64_t>(sums[r]), static_cast<uint64_t>(sums[0]));
}

void DataParallel::set_gradient_sync(bool on) { impl_->sync = on; }

void DataParallel::synchronize_gradients() {
  Impl& d = *impl_;
  if (d.group->size() == 1) return;
  NoGradGuard no_grad;
  // Buckets whose parameters got no gradient in this backward (unused parameters) go now.
  for (Impl::Bucket& bucket : d.buckets) {
    if (bucket.work) continue;
    for (size_t m = 0; m < bucket.members.size(); ++m) {
      const Tensor& p = d.params[bucket.members[m]];
      Tensor slot = bucket.buffer.narrow(0, bucket.offsets[m], p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
    }
    d.launch(bucket);
  }
  const double scale = 1.0 / static_cast<double>(d.group->size());
  const auto wait_start = Clock::now();
  double communication = 0;
  for (Impl::Bucket& bucket : d.buckets) {
    bucket.work->wait();
    communication += std::chrono::duration<double>(Clock::now() - bucket.launched).count();
    bucket.work.reset();
    bucket.ready = 0;
  }
  const double exposed = std::chrono::duration<double>(Clock::now() - wait_start).count();
  for (Impl::Bucket& bucket : d.buckets) {
    for (size_t m = 0; m < bucket.members.size(); ++m) {
      const Tensor& p = d.params[bucket.members[m]];
      p.set_grad((bucket.buffer.narrow(0, bucket.offsets[m], p.numel()) * scale).view(p.shape()));
    }
  }
  std::lock_guard lock(d.stats_mutex);
  // A bucket's time runs from its launch to the end of the wait here: an upper bound on the
  // communication, so the hidden share is not overstated.
  d.stats.communication_seconds += communication;
  d.stats.exposed_seconds += exposed;
}

DataParallel::Stats DataParallel::stats() const {
  std::lock_guard lock(impl_->stats_mutex);
  return impl_->stats;
}

void DataParallel::reset_stats() {
  std::lock_guard lock(impl_->stats_mutex);
  impl_->stats = {};
}

TreeGradientAccumulator::TreeGradientAccumulator(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_) total_ += p.numel();
}

void TreeGradientAccumulator::add() {
  NoGradGuard no_grad;
  Tensor leaf = flatten_grads(params_, total_);
  for (const Tensor& p : params_) p.zero_grad();
  stack_.emplace_back(0, leaf);
  // A binary counter: two trees of the same height merge into one of the next height.
  while (stack_.size() >= 2 && stack_[stack_.size() - 1].first == stack_[stack_.size() - 2].first) {
    auto right = std::move(stack_.back());
    stack_.pop_back();
    auto& left = stack_.back();
    left.second = left.second + right.second;
    ++left.first;
  }
}

void TreeGradientAccumulator::finish(ProcessGroup& group, double scale) {
  TSU_CHECK(!stack_.empty(), ValueError, "[tree_accumulator] finish() without any add()");
  NoGradGuard no_grad;
  while (stack_.size() > 1) {  // only for counts that are not powers of two
    auto right = std::move(stack_.back());
    stack_.pop_back();
    stack_.back().second = stack_.back().second + right.second;
  }
  Tensor sum = stack_.back().second;
  stack_.clear();
  group.all_reduce_tree(sum);
  if (scale != 1.0) sum = sum * scale;
  int64_t offset = 0;
  for (const Tensor& p : params_) {
    p.set_grad(sum.narrow(0, offset, p.numel()).view(p.shape()));
    offset += p.numel();
  }
}

}  // namespace tsumugi

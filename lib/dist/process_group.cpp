// The local (single-process) group, launch detection and the collective timeout.
#include <tsumugi/core/ops.h>
#include <tsumugi/dist/process_group.h>

#include <cstdlib>
#include <string>

#include "core/check.h"
#include "launch.h"

namespace tsumugi {
namespace {

class ReadyWork : public Work {
 public:
  void wait() override {}
};

class LocalGroup : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(Tensor&, ReduceOp) override {}
  void all_reduce_tree(Tensor&) override {}
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp) override {
    TSU_CHECK(input.numel() == output.numel(), ValueError, "[reduce_scatter] input has {} elements, output {}",
              input.numel(), output.numel());
    output.copy_(input.view(output.shape()));
  }
  void all_gather(const Tensor& input, Tensor& output) override {
    TSU_CHECK(input.numel() == output.numel(), ValueError, "[all_gather] input has {} elements, output {}",
              input.numel(), output.numel());
    output.copy_(input.view(output.shape()));
  }
  void broadcast(Tensor&, int root) override {
    TSU_CHECK(root == 0, ValueError, "[broadcast] root {} outside a group of 1", root);
  }
  void send(const Tensor&, int dst, int) override {
    TSU_FAIL(DistError, "[send] rank {} does not exist in a group of 1", dst);
  }
  void recv(Tensor&, int src, int) override { TSU_FAIL(DistError, "[recv] rank {} does not exist in a group of 1", src); }
  void barrier() override {}
  std::shared_ptr<ProcessGroup> split(int, int) override { return std::make_shared<LocalGroup>(); }
  std::shared_ptr<Work> all_reduce_async(Tensor, ReduceOp) override { return std::make_shared<ReadyWork>(); }
};

// Host tensors over one group (MPI), device tensors over another (NCCL) with the same ranks.
class DeviceAwareGroup : public ProcessGroup {
 public:
  DeviceAwareGroup(std::shared_ptr<ProcessGroup> host, std::shared_ptr<ProcessGroup> device)
      : host_(std::move(host)), device_(std::move(device)) {
    TSU_CHECK(host_ && device_ && host_->rank() == device_->rank() && host_->size() == device_->size(), ValueError,
              "[device_aware_group] the host and device groups must have the same ranks");
    timeout_ = host_->timeout();
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend() const override { return host_->backend() + "+" + device_->backend(); }
  void all_reduce(Tensor& t, ReduceOp op) override { of(t).all_reduce(t, op); }
  void all_reduce_tree(Tensor& t) override { of(t).all_reduce_tree(t); }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    of(input).reduce_scatter(input, output, op);
  }
  void all_gather(const Tensor& input, Tensor& output) override { of(input).all_gather(input, output); }
  void broadcast(Tensor& t, int root) override { of(t).broadcast(t, root); }
  void send(const Tensor& t, int dst, int tag) override { of(t).send(t, dst, tag); }
  void recv(Tensor& t, int src, int tag) override { of(t).recv(t, src, tag); }
  void barrier() override {
    host_->set_timeout(timeout_);
    host_->barrier();
  }
  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    // Both are collective over the same ranks, in the same order on every rank.
    auto host = host_->split(color, key);
    return std::make_shared<DeviceAwareGroup>(host, device_->split(color, key));
  }
  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    return of(t).all_reduce_async(std::move(t), op);
  }
  std::shared_ptr<Work> send_async(Tensor t, int dst, int tag) override {
    return of(t).send_async(std::move(t), dst, tag);
  }
  std::shared_ptr<Work> recv_async(Tensor t, int src, int tag) override {
    return of(t).recv_async(std::move(t), src, tag);
  }
  void send_recv(const std::vector<PeerOp>& ops) override {
    if (ops.empty()) return;
    for (const PeerOp& op : ops)
      TSU_CHECK(op.tensor.device().is_cpu() == ops.front().tensor.device().is_cpu(), ValueError,
                "[send_recv] a batch holds tensors on {} and on {}; send CPU and device tensors in separate batches",
                ops.front().tensor.device().str(), op.tensor.device().str());
    of(ops.front().tensor).send_recv(ops);
  }

 private:
  ProcessGroup& of(const Tensor& t) const {
    ProcessGroup& g = t.device().is_cpu() ? *host_ : *device_;
    g.set_timeout(timeout_);
    return g;
  }
  std::shared_ptr<ProcessGroup> host_, device_;
};

// Device tensors through host memory: copied to the CPU, moved by `inner`, copied back.
class HostStagedGroup : public ProcessGroup {
 public:
  explicit HostStagedGroup(std::shared_ptr<ProcessGroup> inner) : inner_(std::move(inner)) { timeout_ = inner_->timeout(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend() + "+host"; }
  void all_reduce(Tensor& t, ReduceOp op) override {
    in_place(t, [&](Tensor& h) { inner().all_reduce(h, op); });
  }
  void all_reduce_tree(Tensor& t) override {
    in_place(t, [&](Tensor& h) { inner().all_reduce_tree(h); });
  }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    in_place(output, [&](Tensor& h) { inner().reduce_scatter(host(input), h, op); });
  }
  void all_gather(const Tensor& input, Tensor& output) override {
    in_place(output, [&](Tensor& h) { inner().all_gather(host(input), h); });
  }
  void broadcast(Tensor& t, int root) override {
    in_place(t, [&](Tensor& h) { inner().broadcast(h, root); });
  }
  void send(const Tensor& t, int dst, int tag) override { inner().send(host(t), dst, tag); }
  void recv(Tensor& t, int src, int tag) override {
    if (t.device().is_cpu()) return inner().recv(t, src, tag);
    Tensor h = empty(t.shape(), {.dtype = t.dtype()});
    inner().recv(h, src, tag);
    t.copy_(h);
  }
  void barrier() override { inner().barrier(); }
  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    return std::make_shared<HostStagedGroup>(inner().split(color, key));
  }
  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    if (t.device().is_cpu()) return inner().all_reduce_async(std::move(t), op);
    Tensor h = host(t);
    return std::make_shared<CopyBack>(inner().all_reduce_async(h, op), h, std::move(t));
  }
  std::shared_ptr<Work> send_async(Tensor t, int dst, int tag) override {
    return inner().send_async(host(t), dst, tag);  // the copy is complete when host() returns
  }
  std::shared_ptr<Work> recv_async(Tensor t, int src, int tag) override {
    if (t.device().is_cpu()) return inner().recv_async(std::move(t), src, tag);
    Tensor h = empty(t.shape(), {.dtype = t.dtype()});
    return std::make_shared<CopyBack>(inner().recv_async(h, src, tag), h, std::move(t));
  }

 private:
  // When the host buffer's operation completes, its bytes go to the device tensor.
  class CopyBack : public Work {
   public:
    CopyBack(std::shared_ptr<Work> work, Tensor host, Tensor device)
        : work_(std::move(work)), host_(std::move(host)), device_(std::move(device)) {}
    void wait() override {
      if (!work_) return;
      work_->wait();
      work_.reset();
      device_.copy_(host_);
    }

   private:
    std::shared_ptr<Work> work_;
    Tensor host_, device_;
  };
  static Tensor host(const Tensor& t) { return t.device().is_cpu() ? t : t.to(Device::cpu()).contiguous(); }
  // Runs `op` on a host copy of a device tensor (or on a cpu tensor itself), then copies back.
  template <class Op>
  static void in_place(Tensor& t, Op&& op) {
    if (t.device().is_cpu()) return op(t);
    Tensor h = host(t);
    op(h);
    t.copy_(h);
  }
  ProcessGroup& inner() {
    inner_->set_timeout(timeout_);
    return *inner_;
  }
  std::shared_ptr<ProcessGroup> inner_;
};

}  // namespace

std::shared_ptr<ProcessGroup> host_staged_group(std::shared_ptr<ProcessGroup> group) {
  TSU_CHECK(group != nullptr, ValueError, "[host_staged_group] the group is null");
  return std::make_shared<HostStagedGroup>(std::move(group));
}

std::shared_ptr<ProcessGroup> device_aware_group(std::shared_ptr<ProcessGroup> host,
                                                 std::shared_ptr<ProcessGroup> device) {
  return std::make_shared<DeviceAwareGroup>(std::move(host), std::move(device));
}

std::chrono::milliseconds ProcessGroup::default_timeout() {
  if (const char* env = std::getenv("TSUMUGI_COLLECTIVE_TIMEOUT")) {
    const double seconds = std::atof(env);
    if (seconds > 0) return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  }
  return std::chrono::seconds(600);
}

std::shared_ptr<Work> ProcessGroup::send_async(Tensor, int, int) {
  TSU_FAIL(NotImplementedError, "[send_async] the {} backend has no non-blocking send", backend());
}

std::shared_ptr<Work> ProcessGroup::recv_async(Tensor, int, int) {
  TSU_FAIL(NotImplementedError, "[recv_async] the {} backend has no non-blocking receive", backend());
}

void ProcessGroup::send_recv(const std::vector<PeerOp>& ops) {
  std::vector<std::shared_ptr<Work>> works;
  works.reserve(ops.size());
  for (const PeerOp& op : ops)
    works.push_back(op.kind == PeerOp::send ? send_async(op.tensor, op.peer, op.tag) : recv_async(op.tensor, op.peer, op.tag));
  for (const auto& work : works) work->wait();
}

std::shared_ptr<ProcessGroup> local_group() { return std::make_shared<LocalGroup>(); }

bool launched_with_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

int job_rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return 0;
}

std::shared_ptr<ProcessGroup> default_group() { return launched_with_mpi() ? mpi_world() : local_group(); }

}  // namespace tsumugi

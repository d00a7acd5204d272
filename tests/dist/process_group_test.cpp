// Collectives over real MPI processes (CTest runs this under mpirun with 2 and 4 ranks).
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/dist/process_group.h>

#include <cmath>

#include "mpi_main.h"

using namespace tsumugi;

namespace {

std::shared_ptr<ProcessGroup> world() {
  static auto group = default_group();
  return group;
}

// What rank r contributes: values that make float sums order-sensitive.
Tensor contribution(int r, int64_t n = 1000) {
  Generator gen(100 + static_cast<uint64_t>(r));
  return randn({n}, gen) * std::pow(10.0, r % 3);
}

// Stands in for the device side of a device-aware group on a machine without GPUs: it has
// ranks (and splits like the group it mirrors) but refuses to move anything, so a CPU tensor that
// reached it would fail the test.
class NoTransport : public ProcessGroup {
 public:
  explicit NoTransport(std::shared_ptr<ProcessGroup> mirror) : mirror_(std::move(mirror)) {}
  int rank() const override { return mirror_->rank(); }
  int size() const override { return mirror_->size(); }
  std::string backend() const override { return "none"; }
  void all_reduce(Tensor&, ReduceOp) override { refuse(); }
  void all_reduce_tree(Tensor&) override { refuse(); }
  void reduce_scatter(const Tensor&, Tensor&, ReduceOp) override { refuse(); }
  void all_gather(const Tensor&, Tensor&) override { refuse(); }
  void broadcast(Tensor&, int) override { refuse(); }
  void send(const Tensor&, int, int) override { refuse(); }
  void recv(Tensor&, int, int) override { refuse(); }
  void barrier() override { refuse(); }
  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    ++splits;
    return std::make_shared<NoTransport>(mirror_->split(color, key));
  }
  std::shared_ptr<Work> all_reduce_async(Tensor, ReduceOp) override { refuse(); }
  int splits = 0;

 private:
  [[noreturn]] static void refuse() { throw std::logic_error("a host tensor went to the device group"); }
  std::shared_ptr<ProcessGroup> mirror_;
};

}  // namespace

TEST(ProcessGroup, KnowsRankAndSize) {
  const ProcessInfo info = process_info();
  EXPECT_EQ(info.rank, world()->rank());
  EXPECT_EQ(info.world, world()->size());
  EXPECT_GE(info.local_rank, 0);
  EXPECT_LT(info.local_rank, info.local_world);
}

TEST(ProcessGroup, AllReduceSumsAndMaxes) {
  const int r = world()->rank(), n = world()->size();
  Tensor t = full({3}, static_cast<double>(r + 1));
  world()->all_reduce(t);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(3, static_cast<float>(n * (n + 1) / 2)));
  Tensor m = from_data<int64_t>({r, -r});
  world()->all_reduce(m, ReduceOp::max);
  EXPECT_EQ(m.to_vector<int64_t>(), (std::vector<int64_t>{n - 1, 0}));
}

TEST(ProcessGroup, TreeAllReduceIsBitwiseThePairwiseTreeOnEveryRank) {
  const int n = world()->size();
  Tensor t = contribution(world()->rank());
  world()->all_reduce_tree(t);
  // The same tree computed locally from everyone's contributions.
  std::vector<Tensor> level;
  for (int r = 0; r < n; ++r) level.push_back(contribution(r));
  while (level.size() > 1) {
    std::vector<Tensor> next;
    for (size_t i = 0; i < level.size(); i += 2) next.push_back(level[i] + level[i + 1]);
    level = next;
  }
  EXPECT_EQ(t.to_vector<float>(), level[0].to_vector<float>());
  // Identical bits everywhere: gather and compare with rank 0's.
  Tensor all = empty({n * t.numel()});
  world()->all_gather(t, all);
  for (int r = 1; r < n; ++r)
    EXPECT_EQ(all.narrow(0, r * t.numel(), t.numel()).to_vector<float>(), t.to_vector<float>());
}

TEST(ProcessGroup, ReduceScatterAllGatherBroadcast) {
  const int r = world()->rank(), n = world()->size();
  Tensor input = arange(0.0, 2.0 * n, 1.0, {.dtype = DType::f32}) + static_cast<double>(r);
  Tensor chunk = empty({2});
  world()->reduce_scatter(input, chunk);
  // Chunk r holds elements 2r, 2r + 1 summed over ranks: n * value + (0 + 1 + ... + n - 1).
  const float offset = static_cast<float>(n * (n - 1) / 2);
  EXPECT_EQ(chunk.to_vector<float>(), (std::vector<float>{n * 2.0f * r + offset, n * (2.0f * r + 1) + offset}));
  Tensor gathered = empty({2 * n});
  world()->all_gather(full({2}, r), gathered);
  for (int i = 0; i < n; ++i) EXPECT_EQ(gathered.to_vector<float>()[2 * i], static_cast<float>(i));
  Tensor b = full({4}, r == n - 1 ? 7.0 : 0.0);
  world()->broadcast(b, n - 1);
  EXPECT_EQ(b.to_vector<float>(), std::vector<float>(4, 7.0f));
}

TEST(ProcessGroup, SendAndReceiveAroundARing) {
  const int r = world()->rank(), n = world()->size();
  Tensor out = full({5}, r);
  Tensor in = empty({5});
  if (r % 2 == 0) {
    world()->send(out, (r + 1) % n, 3);
    world()->recv(in, (r + n - 1) % n, 3);
  } else {
    world()->recv(in, (r + n - 1) % n, 3);
    world()->send(out, (r + 1) % n, 3);
  }
  EXPECT_EQ(in.to_vector<float>(), std::vector<float>(5, static_cast<float>((r + n - 1) % n)));
}

// Every rank posts its send before its receive, in one batch: blocking calls in that order would
// all wait for each other (for messages too large to be buffered); a batch must not.
TEST(ProcessGroup, SendRecvBatchesASendAndAReceiveThatWouldOtherwiseWaitOnEachOther) {
  for (const auto& group : {world(), host_staged_group(world())}) {
    const int r = group->rank(), n = group->size();
    if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
    Tensor out = full({100000}, r), in = empty({100000}), second = empty({3});
    group->send_recv({{PeerOp::send, out, (r + 1) % n, 5}, {PeerOp::recv, in, (r + n - 1) % n, 5}});
    EXPECT_EQ(in.to_vector<float>(), std::vector<float>(100000, static_cast<float>((r + n - 1) % n)));
    // Messages between two ranks arrive in the order posted, across batches.
    group->send_recv({{PeerOp::send, full({3}, 10 * r), (r + 1) % n, 5}, {PeerOp::send, full({3}, 10 * r + 1), (r + 1) % n, 5},
                      {PeerOp::recv, in.narrow(0, 0, 3), (r + n - 1) % n, 5}});
    group->send_recv({{PeerOp::recv, second, (r + n - 1) % n, 5}});
    EXPECT_EQ(in.narrow(0, 0, 3).to_vector<float>(), std::vector<float>(3, 10.0f * ((r + n - 1) % n)));
    EXPECT_EQ(second.to_vector<float>(), std::vector<float>(3, 10.0f * ((r + n - 1) % n) + 1));
    group->send_recv({});  // nothing to do
  }
}

TEST(ProcessGroup, SplitMakesIndependentSubGroups) {
  const int r = world()->rank();
  auto half = world()->split(r % 2, r);
  EXPECT_EQ(half->size(), (world()->size() + 1 - r % 2) / 2);
  EXPECT_EQ(half->rank(), r / 2);
  Tensor t = full({1}, r);
  half->all_reduce(t);
  float want = 0;
  for (int i = r % 2; i < world()->size(); i += 2) want += static_cast<float>(i);
  EXPECT_EQ(t.item<float>(), want);
}

TEST(ProcessGroup, AsyncAllReducesOverlapWithOtherCollectives) {
  const int n = world()->size();
  std::vector<Tensor> buckets;
  std::vector<std::shared_ptr<Work>> work;
  for (int i = 0; i < 8; ++i) {
    buckets.push_back(full({10000}, i));
    work.push_back(world()->all_reduce_async(buckets.back()));
  }
  world()->barrier();  // on the calling thread while the buckets travel
  for (auto& w : work) w->wait();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(buckets[static_cast<size_t>(i)].to_vector<float>()[9999], static_cast<float>(i * n));
}

// A multi-GPU job's group: host tensors (losses, flags, checksums) over MPI, device tensors
// over NCCL. On the CPU every collective must take the host side.
TEST(ProcessGroup, DeviceAwareGroupMovesHostTensorsOverTheHostGroup) {
  auto device_side = std::make_shared<NoTransport>(world());
  auto both = device_aware_group(world(), device_side);
  const int r = both->rank(), n = both->size();
  EXPECT_EQ(r, world()->rank());
  EXPECT_EQ(n, world()->size());
  EXPECT_EQ(both->backend(), world()->backend() + "+none");
  Tensor sum = full({3}, r + 1);
  both->all_reduce(sum);
  EXPECT_EQ(sum.to_vector<float>(), std::vector<float>(3, n * (n + 1) / 2.0f));
  Tensor gathered = empty({n}, {.dtype = DType::i64});
  both->all_gather(full({1}, r, {.dtype = DType::i64}), gathered);
  EXPECT_EQ(gathered.to_vector<int64_t>(), arange(n).to_vector<int64_t>());
  Tensor b = full({2}, r == 0 ? 5.0 : 0.0);
  both->broadcast(b, 0);
  EXPECT_EQ(b.to_vector<float>(), std::vector<float>(2, 5.0f));
  Tensor bucket = full({100}, r);
  auto work = both->all_reduce_async(bucket);
  both->barrier();
  work->wait();
  EXPECT_EQ(bucket.to_vector<float>()[99], static_cast<float>(n * (n - 1) / 2));
  // split() splits both sides, so the sub-group still has a device side with the same ranks.
  auto half = both->split(r % 2, r);
  EXPECT_EQ(device_side->splits, 1);
  EXPECT_EQ(half->rank(), r / 2);
  Tensor t = full({1}, r);
  half->all_reduce(t);
  float want = 0;
  for (int i = r % 2; i < n; i += 2) want += static_cast<float>(i);
  EXPECT_EQ(t.item<float>(), want);
  if (n > 1) {  // sides with different ranks are refused
    EXPECT_THROW(device_aware_group(world(), local_group()), ValueError);
  }
}

// A pipeline's group on GPUs stages device tensors through host memory; host tensors pass
// straight through, over the same ranks.
TEST(ProcessGroup, HostStagedGroupPassesHostTensorsThrough) {
  auto staged = host_staged_group(world());
  const int r = staged->rank(), n = staged->size();
  EXPECT_EQ(staged->backend(), world()->backend() + "+host");
  Tensor sum = full({3}, r + 1);
  staged->all_reduce(sum);
  EXPECT_EQ(sum.to_vector<float>(), std::vector<float>(3, n * (n + 1) / 2.0f));
  auto half = staged->split(r % 2, r);
  EXPECT_EQ(half->backend(), world()->backend() + "+host");
  EXPECT_EQ(half->rank(), r / 2);
  if (n > 1) {
    Tensor out = full({5}, r);
    Tensor in = empty({5});
    auto receive = staged->recv_async(in, (r + n - 1) % n, 7);
    staged->send_async(out, (r + 1) % n, 7)->wait();
    receive->wait();
    EXPECT_EQ(in.to_vector<float>(), std::vector<float>(5, static_cast<float>((r + n - 1) % n)));
  }
}

TEST(ProcessGroup, NcclGroupIsNotImplementedWithoutNccl) {
  if (nccl_built()) GTEST_SKIP() << "built with NCCL";
  EXPECT_THROW(nccl_group(world(), Device::cuda(0)), NotImplementedError);
}

// The same collectives over NCCL, one GPU per rank, bootstrapped over MPI.
TEST(ProcessGroup, NcclCollectivesAgreeWithTheCpuOnes) {
  const ProcessInfo info = process_info();
  if (!nccl_built() || cuda_device_count() < info.local_world) GTEST_SKIP() << "needs NCCL and a GPU per rank";
  const auto gpus = nccl_group(world(), Device::cuda(info.local_rank));
  const int r = gpus->rank(), n = gpus->size();
  const Device gpu = Device::cuda(info.local_rank);
  EXPECT_EQ(r, world()->rank());
  Tensor sum = full({3}, r + 1, {.dtype = DType::bf16, .device = gpu});
  gpus->all_reduce(sum);
  EXPECT_EQ(sum.to(Device::cpu()).to(DType::f32).to_vector<float>(), std::vector<float>(3, n * (n + 1) / 2.0f));
  // The tree over GPUs gives the bits of the tree over the CPU group.
  if ((n & (n - 1)) == 0) {
    Tensor on_cpu = contribution(r);
    Tensor on_gpu = contribution(r).to(gpu);
    world()->all_reduce_tree(on_cpu);
    gpus->all_reduce_tree(on_gpu);
    EXPECT_EQ(on_gpu.to(Device::cpu()).to_vector<float>(), on_cpu.to_vector<float>());
  }
  Tensor chunk = empty({2}, {.device = gpu});
  gpus->reduce_scatter((arange(0.0, 2.0 * n, 1.0, {.dtype = DType::f32}) + static_cast<double>(r)).to(gpu), chunk);
  const float offset = static_cast<float>(n * (n - 1) / 2);
  EXPECT_EQ(chunk.to(Device::cpu()).to_vector<float>(),
            (std::vector<float>{n * 2.0f * r + offset, n * (2.0f * r + 1) + offset}));
  Tensor gathered = empty({n}, {.dtype = DType::i64, .device = gpu});
  gpus->all_gather(full({1}, r, {.dtype = DType::i64, .device = gpu}), gathered);
  EXPECT_EQ(gathered.to(Device::cpu()).to_vector<int64_t>(), arange(n).to_vector<int64_t>());
  Tensor b = full({4}, r == n - 1 ? 7.0 : 0.0, {.device = gpu});
  gpus->broadcast(b, n - 1);
  EXPECT_EQ(b.to(Device::cpu()).to_vector<float>(), std::vector<float>(4, 7.0f));
  if (n > 1) {
    Tensor out = full({5}, r, {.device = gpu});
    Tensor in = empty({5}, {.device = gpu});
    if (r % 2 == 0) {
      gpus->send(out, (r + 1) % n);
      gpus->recv(in, (r + n - 1) % n);
    } else {
      gpus->recv(in, (r + n - 1) % n);
      gpus->send(out, (r + 1) % n);
    }
    EXPECT_EQ(in.to(Device::cpu()).to_vector<float>(), std::vector<float>(5, static_cast<float>((r + n - 1) % n)));
    // A pipeline stage's batch: send to the next rank and receive from the previous at once.
    Tensor big_out = full({1 << 20}, r, {.device = gpu}), big_in = empty({1 << 20}, {.device = gpu});
    gpus->send_recv({{PeerOp::send, big_out, (r + 1) % n}, {PeerOp::recv, big_in, (r + n - 1) % n}});
    EXPECT_EQ(big_in.to(Device::cpu()).to_vector<float>()[(1 << 20) - 1], static_cast<float>((r + n - 1) % n));
  }
  auto half = gpus->split(r % 2, r);
  EXPECT_EQ(half->rank(), r / 2);
  Tensor bucket = full({10000}, r, {.device = gpu});
  auto work = gpus->all_reduce_async(bucket);
  gpus->barrier();
  work->wait();
  EXPECT_EQ(bucket.to(Device::cpu()).to_vector<float>()[9999], static_cast<float>(n * (n - 1) / 2));
}

// The trainer's multi-GPU group: GPU tensors over NCCL and CPU tensors over MPI, side by side.
TEST(ProcessGroup, NcclAndMpiInOneDeviceAwareGroup) {
  const ProcessInfo info = process_info();
  if (!nccl_built() || cuda_device_count() < info.local_world) GTEST_SKIP() << "needs NCCL and a GPU per rank";
  const Device gpu = Device::cuda(info.local_rank);
  auto both = device_aware_group(world(), nccl_group(world(), gpu));
  const int r = both->rank(), n = both->size();
  EXPECT_EQ(both->backend(), world()->backend() + "+nccl");
  Tensor on_gpu = full({4}, r + 1, {.device = gpu});
  Tensor on_cpu = full({4}, 2 * (r + 1));
  auto work = both->all_reduce_async(on_gpu);
  both->all_reduce(on_cpu);
  work->wait();
  EXPECT_EQ(on_gpu.to(Device::cpu()).to_vector<float>(), std::vector<float>(4, n * (n + 1) / 2.0f));
  EXPECT_EQ(on_cpu.to_vector<float>(), std::vector<float>(4, static_cast<float>(n * (n + 1))));
  auto half = both->split(r % 2, r);
  Tensor t = full({1}, r, {.device = gpu});
  half->all_reduce(t);
  float want = 0;
  for (int i = r % 2; i < n; i += 2) want += static_cast<float>(i);
  EXPECT_EQ(t.to(Device::cpu()).item<float>(), want);
}

TSU_MPI_TEST_MAIN

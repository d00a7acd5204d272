// The NCCL process group on one GPU: a communicator of one rank (bootstrapped over the local
// group) runs every collective for real. Several ranks are tested in tests/dist under mpirun.
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/dist/process_group.h>
#include <tsumugi/dist/zero.h>

#include <chrono>
#include <thread>

#include "cuda/cuda_test_util.h"
#ifdef TSUMUGI_WITH_CUDA
#include "core/cuda/runtime.h"
#endif

namespace tsumugi {
namespace {
using testing::random_tensor;

#define TSU_REQUIRE_NCCL()                                                   \
  do {                                                                       \
    TSU_REQUIRE_GPU();                                                       \
    if (!::tsumugi::nccl_built()) GTEST_SKIP() << "built without NCCL";     \
  } while (0)

const Device kGpu = Device::cuda(0);

// Shared by the tests and never destroyed: no communicator is torn down during exit, after
// the CUDA runtime may have gone (the tests that destroy groups do it while it is alive).
std::shared_ptr<ProcessGroup> gpu_group() {
  static const auto* group = new std::shared_ptr<ProcessGroup>(nccl_group(local_group(), kGpu));
  return *group;
}

std::vector<double> values(const Tensor& t) { return t.to(Device::cpu()).to(DType::f64).to_vector<double>(); }

// Runs without a GPU too: the device is checked before NCCL is touched.
TEST(NcclGroup, RefusesADeviceThatIsNotAVisibleGpu) {
  if (!nccl_built()) GTEST_SKIP() << "built without NCCL";
  EXPECT_THROW(nccl_group(local_group(), Device::cpu()), ValueError);
  try {
    nccl_group(local_group(), Device::cuda(cuda_device_count()));
    FAIL() << "a device beyond the visible ones was accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("is not a visible CUDA device"), std::string::npos) << e.what();
  }
}

TEST(NcclGroup, IsAGroupOfOneOverNccl) {
  TSU_REQUIRE_NCCL();
  EXPECT_EQ(gpu_group()->backend(), "nccl");
  EXPECT_EQ(gpu_group()->rank(), 0);
  EXPECT_EQ(gpu_group()->size(), 1);
}

TEST(NcclGroup, AllReduceOfOneRankLeavesEveryDtypeUnchanged) {
  TSU_REQUIRE_NCCL();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64}) {
    const Tensor host = random_tensor({1000}, 1, -50, 50).to(dtype);
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::min}) {
      Tensor t = host.to(kGpu);
      gpu_group()->all_reduce(t, op);
      EXPECT_EQ(values(t), values(host)) << dtype_name(dtype);
    }
  }
}

TEST(NcclGroup, TreeAllReduceOfOneRankLeavesTheBits) {
  TSU_REQUIRE_NCCL();
  for (DType dtype : {DType::f32, DType::bf16, DType::i64}) {
    const Tensor host = random_tensor({777}, 2, -5, 5).to(dtype);
    Tensor t = host.to(kGpu);
    gpu_group()->all_reduce_tree(t);
    EXPECT_EQ(values(t), values(host)) << dtype_name(dtype);
  }
}

TEST(NcclGroup, ReduceScatterAndAllGatherCopyTheOnlyChunk) {
  TSU_REQUIRE_NCCL();
  const Tensor host = random_tensor({64}, 3);
  Tensor chunk = zeros({64}, {.device = kGpu});
  gpu_group()->reduce_scatter(host.to(kGpu), chunk);
  EXPECT_EQ(values(chunk), values(host));
  Tensor gathered = zeros({64}, {.dtype = DType::bf16, .device = kGpu});
  gpu_group()->all_gather(host.to(DType::bf16).to(kGpu), gathered);
  EXPECT_EQ(values(gathered), values(host.to(DType::bf16)));
}

TEST(NcclGroup, BroadcastFromTheOnlyRankKeepsTheTensor) {
  TSU_REQUIRE_NCCL();
  const Tensor host = random_tensor({5, 3}, 4).to(DType::f16);
  Tensor t = host.to(kGpu);
  gpu_group()->broadcast(t, 0);
  EXPECT_EQ(values(t), values(host));
  EXPECT_THROW(gpu_group()->broadcast(t, 1), DistError);
}

TEST(NcclGroup, SendAndReceiveRefuseRanksOutsideTheGroupAndItself) {
  TSU_REQUIRE_NCCL();
  // A blocking send to oneself could never be matched; several ranks are tested under mpirun.
  Tensor t = zeros({4}, {.device = kGpu});
  EXPECT_THROW(gpu_group()->send(t, 1), DistError);
  EXPECT_THROW(gpu_group()->recv(t, -1), DistError);
  EXPECT_THROW(gpu_group()->send(t, 0), ValueError);
  EXPECT_THROW(gpu_group()->recv(t, 0), ValueError);
}

TEST(NcclGroup, SplitMakesAWorkingGroup) {
  TSU_REQUIRE_NCCL();
  gpu_group()->barrier();
  const std::shared_ptr<ProcessGroup> sub = gpu_group()->split(3, 0);
  EXPECT_EQ(sub->backend(), "nccl");
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->timeout(), gpu_group()->timeout());
  Tensor t = full({10}, 2.5, {.device = kGpu});
  sub->all_reduce(t);
  sub->barrier();
  EXPECT_EQ(values(t), std::vector<double>(10, 2.5));
}

TEST(NcclGroup, AsyncAllReduceIsOrderedBeforeLaterKernels) {
  TSU_REQUIRE_NCCL();
  // Produced by a kernel on tsumugi's stream just before the all-reduce starts on the
  // communication stream, and read by kernels after wait(): both orders are needed.
  std::vector<Tensor> buckets;
  std::vector<std::shared_ptr<Work>> work;
  for (int i = 0; i < 8; ++i) {
    buckets.push_back(full({1 << 20}, 1.0, {.device = kGpu}) * static_cast<double>(i));
    work.push_back(gpu_group()->all_reduce_async(buckets.back()));
  }
  gpu_group()->barrier();
  for (auto& w : work) w->wait();
  for (int i = 0; i < 8; ++i) {
    const Tensor doubled = buckets[static_cast<size_t>(i)] * 2.0;
    EXPECT_EQ(values(doubled.narrow(0, (1 << 20) - 3, 3)), std::vector<double>(3, 2.0 * i));
  }
}

TEST(NcclGroup, RefusesCpuTensorsAndOtherDevices) {
  TSU_REQUIRE_NCCL();
  Tensor cpu = zeros({4});
  EXPECT_THROW(gpu_group()->all_reduce(cpu), ValueError);
  EXPECT_THROW(gpu_group()->all_reduce_async(cpu), ValueError);
  Tensor gathered = zeros({4}, {.device = kGpu});
  EXPECT_THROW(gpu_group()->all_gather(cpu, gathered), ValueError);
  try {
    gpu_group()->broadcast(cpu, 0);
    FAIL() << "a cpu tensor was accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("[broadcast] the NCCL backend needs contiguous tensors on cuda:0"),
              std::string::npos)
        << e.what();
  }
  Tensor strided = zeros({4, 4}, {.device = kGpu}).transpose(0, 1);
  EXPECT_THROW(gpu_group()->all_reduce(strided), ValueError);
  Tensor u16 = zeros({4}, {.dtype = DType::u16, .device = kGpu});
  EXPECT_THROW(gpu_group()->all_reduce(u16), ValueError);
}

// The trainer's multi-GPU group on one GPU: device tensors over NCCL, host tensors over the
// bootstrap group, and data parallelism (broadcast, checksum, device buckets) over it.
TEST(NcclGroup, CarriesTheDeviceSideOfADataParallelModel) {
  TSU_REQUIRE_NCCL();
  auto both = device_aware_group(local_group(), gpu_group());
  EXPECT_EQ(both->backend(), "local+nccl");
  Tensor on_gpu = full({4}, 3.0, {.device = kGpu});
  Tensor on_cpu = full({4}, 5.0);
  auto work = both->all_reduce_async(on_gpu);
  both->all_reduce(on_cpu);
  work->wait();
  EXPECT_EQ(values(on_gpu), std::vector<double>(4, 3.0));
  EXPECT_EQ(values(on_cpu), std::vector<double>(4, 5.0));

  ModelConfig config{.arch = Arch::llama, .layers = 2, .heads = 2, .kv_heads = 1, .dim = 16, .vocab = 31, .context = 8};
  auto model = make_model(config);
  model->init_weights(3);
  const uint64_t on_host = parameter_checksum(*model);
  model->to(kGpu);
  EXPECT_EQ(parameter_checksum(*model), on_host);  // read back from the device, not dereferenced there
  broadcast_parameters(*model, *both);
  EXPECT_EQ(parameter_checksum(*model), on_host);
  DataParallel dp(*model, both);
  Generator gen(4);
  const Tensor tokens = randint(0, 31, {2, 9}, gen);
  const Tensor inputs = tokens.narrow(1, 0, 8).contiguous().to(kGpu);
  const Tensor targets = tokens.narrow(1, 1, 8).contiguous().to(kGpu);
  cross_entropy(model->forward(inputs).view({-1, 31}), targets.view({-1})).backward();
  dp.synchronize_gradients();
  for (const Tensor& p : model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_TRUE(p.grad().device() == kGpu);
  }
}

// ZeRO-1 on one GPU through the trainer's group (gradients reduce-scattered and weights
// all-gathered over NCCL, the squared norm over the host group): the same AdamW kernel on the
// shard as the replicated optimizer on the parameters, so the same bits, in f32 and in bf16
// (fp32 master weights in the shard, bf16 weights gathered).
TEST(NcclGroup, ZeroOneOnTheGpuGivesTheReplicatedOptimizersBits) {
  TSU_REQUIRE_NCCL();
  auto both = device_aware_group(local_group(), gpu_group());
  const AdamWOptions options{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  const std::vector<Shape> shapes = {{7}, {40, 25}, {4099}, {9, 5000}};
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    NamedTensors ref, params;
    StateDict start;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::string name = "p" + std::to_string(i);
      start.emplace(name, random_tensor(shapes[i], 10 + i));
      for (NamedTensors* set : {&ref, &params}) {
        Tensor p = start.at(name).to(dtype).to(kGpu);
        p.set_requires_grad(true);
        set->emplace_back(name, p);
      }
    }
    AdamW adamw(ref, options);
    ZeroAdamW zero(params, options, both, /*gradients_reduced=*/false);
    adamw.load_master_weights(start);
    zero.load_master_weights(start);
    for (int step = 1; step <= 3; ++step) {
      std::vector<Tensor> ref_params;
      for (size_t i = 0; i < shapes.size(); ++i) {
        const Tensor g = random_tensor(shapes[i], 100 * step + i, -0.5, 0.5).to(dtype).to(kGpu);
        ref[i].second.set_grad(g);
        params[i].second.set_grad(g.clone());
        ref_params.push_back(ref[i].second);
      }
      const double norm = grad_norm(ref_params);
      EXPECT_NEAR(zero.reduce_gradients(1.0), norm, 1e-6 * norm);
      const double clip = step == 2 ? 0.5 : 1.0;
      adamw.step(clip);
      zero.update(clip);
      adamw.zero_grad();
      zero.zero_grad();
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_TRUE(params[i].second.device() == kGpu);
      EXPECT_EQ(values(params[i].second), values(ref[i].second)) << ref[i].first;
    }
    const StateDict want = adamw.state_dict(), got = zero.state_dict();
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, t] : want) EXPECT_EQ(values(got.at(name)), values(t)) << name;
    const StateDict want_master = adamw.master_weights(), got_master = zero.master_weights();
    for (const auto& [name, t] : want_master) EXPECT_EQ(values(got_master.at(name)), values(t)) << name;
  }
}

// A pipeline's activations between GPUs go through host memory (host_staged_group): every
// collective on a device tensor leaves the device tensor with the result.
TEST(NcclGroup, HostStagedGroupCopiesDeviceTensorsBothWays) {
  TSU_REQUIRE_GPU();
  auto staged = host_staged_group(local_group());
  EXPECT_EQ(staged->backend(), "local+host");
  const Tensor host = random_tensor({257}, 5);
  Tensor t = host.to(kGpu);
  staged->all_reduce(t);
  staged->broadcast(t, 0);
  staged->all_reduce_tree(t);
  EXPECT_TRUE(t.device() == kGpu);
  EXPECT_EQ(values(t), values(host));
  Tensor out = zeros({257}, {.device = kGpu});
  staged->reduce_scatter(t, out);
  EXPECT_EQ(values(out), values(host));
  Tensor gathered = zeros({257}, {.device = kGpu});
  staged->all_gather(out * 2.0, gathered);
  EXPECT_EQ(values(gathered), values(host * 2.0));
  Tensor bucket = host.to(kGpu) * 3.0;
  auto work = staged->all_reduce_async(bucket);
  work->wait();
  EXPECT_EQ(values(bucket), values(host * 3.0));
}

TEST(NcclGroup, TakesItsTimeoutFromTheBootstrapGroup) {
  TSU_REQUIRE_NCCL();
  auto bootstrap = local_group();
  bootstrap->set_timeout(std::chrono::milliseconds(1500));
  auto group = nccl_group(bootstrap, kGpu);
  EXPECT_EQ(group->timeout(), std::chrono::milliseconds(1500));
  Tensor t = ones({16}, {.device = kGpu});
  group->all_reduce(t);
  EXPECT_EQ(values(t), std::vector<double>(16, 1.0));
}

#ifdef TSUMUGI_WITH_CUDA
void sleep_on_host(void* milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<const int*>(milliseconds)));
}

// Last in the file: it aborts a communicator while NCCL work sits queued behind the stall.
TEST(NcclGroup, ACollectivePastTheTimeoutAbortsTheCommunicatorAndNamesIt) {
  TSU_REQUIRE_NCCL();
  auto bootstrap = local_group();
  bootstrap->set_timeout(std::chrono::milliseconds(300));
  auto group = nccl_group(bootstrap, kGpu);
  Tensor t = ones({16}, {.device = kGpu});
  group->all_reduce(t);  // #1 completes
  // tsumugi's stream is held up on the host for longer than the timeout: all-reduce #2 cannot finish.
  static const int stall_ms = 2000;
  TSU_CUDA_CHECK(cudaLaunchHostFunc(cuda::stream(kGpu.index), sleep_on_host, const_cast<int*>(&stall_ms)));
  const auto start = std::chrono::steady_clock::now();
  try {
    group->all_reduce(t);
    FAIL() << "a stalled all-reduce returned";
  } catch (const DistError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0: collective all_reduce #2 did not complete within 0.3 s"),
              std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  try {
    group->barrier();
    FAIL() << "an aborted communicator was used";
  } catch (const DistError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
  // The stall passes and the device stays usable for other communicators.
  cuda_synchronize(kGpu.index);
  Tensor u = full({16}, 3.0, {.device = kGpu});
  gpu_group()->all_reduce(u);
  EXPECT_EQ(values(u), std::vector<double>(16, 3.0));
}
#endif

}  // namespace
}  // namespace tsumugi

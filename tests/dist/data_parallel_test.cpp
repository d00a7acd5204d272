// Data parallelism over real MPI ranks (np 1, 2, 4): averaged gradients match a single process,
// and the deterministic tree gives identical bits for any rank count.
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/dist/data_parallel.h>

#include <cmath>

#include "mpi_main.h"

using namespace tsumugi;

namespace {

std::shared_ptr<ProcessGroup> world() {
  static auto group = default_group();
  return group;
}

std::shared_ptr<CausalLM> tiny_model(uint64_t seed) {
  ModelConfig c{.arch = Arch::llama, .layers = 2, .heads = 2, .kv_heads = 1, .dim = 16, .vocab = 31, .context = 8};
  auto model = make_model(c);
  model->init_weights(seed);
  return model;
}

// The global batch: 8 sequences of 8 tokens (+1 for the targets).
Tensor global_tokens() {
  Generator gen(5);
  return randint(0, 31, {8, 9}, gen);
}

Tensor loss_of(CausalLM& model, const Tensor& rows) {
  const Tensor inputs = rows.narrow(1, 0, 8).contiguous(), targets = rows.narrow(1, 1, 8).contiguous();
  return cross_entropy(model.forward(inputs).view({-1, 31}), targets.view({-1}));
}

std::vector<std::vector<float>> grads_of(CausalLM& model) {
  std::vector<std::vector<float>> out;
  for (const Tensor& p : model.parameters()) out.push_back(p.grad().to_vector<float>());
  return out;
}

}  // namespace

TEST(DataParallel, BroadcastGivesEveryRankRankZerosWeights) {
  auto model = tiny_model(100 + static_cast<uint64_t>(world()->rank()));  // different on purpose
  broadcast_parameters(*model, *world());
  auto reference = tiny_model(100);
  for (const auto& [name, t] : reference->state_dict())
    EXPECT_EQ(model->state_dict().at(name).to_vector<float>(), t.to_vector<float>()) << name;
}

TEST(DataParallel, AveragedGradientsMatchOneProcessOnTheWholeBatch) {
  const int r = world()->rank(), n = world()->size();
  const Tensor tokens = global_tokens();
  // Reference: one process, whole batch, mean loss.
  auto reference = tiny_model(1);
  loss_of(*reference, tokens).backward();
  const auto want = grads_of(*reference);
  // Data parallel: this rank's contiguous slice, in two micro-batches, communication on the last.
  auto model = tiny_model(1);
  DataParallel dp(*model, world(), {.bucket_bytes = 2048});
  const int64_t rows = 8 / n, micro = std::max<int64_t>(rows / 2, 1), count = rows / micro;
  const Tensor mine = tokens.narrow(0, r * rows, rows);
  for (int64_t m = 0; m < count; ++m) {
    dp.set_gradient_sync(m + 1 == count);
    const int64_t buckets_before = dp.stats().buckets;
    (loss_of(*model, mine.narrow(0, m * micro, micro)) * (1.0 / static_cast<double>(count))).backward();
    if (m + 1 < count) {
      EXPECT_EQ(dp.stats().buckets, buckets_before) << "communication on a non-final micro-batch";
    }
  }
  dp.synchronize_gradients();
  const auto got = grads_of(*model);
  for (size_t i = 0; i < want.size(); ++i)
    for (size_t j = 0; j < want[i].size(); ++j)
      ASSERT_NEAR(got[i][j], want[i][j], 1e-6 * (1 + std::fabs(want[i][j]))) << "parameter " << i << " element " << j;
  if (n > 1) {
    EXPECT_GT(dp.stats().buckets, 1);  // several buckets, launched during backward
  }
}

// The same on GPUs, as the trainer runs it: weights broadcast and gradients averaged over NCCL
// in a device-aware group, one GPU per rank. On a single GPU this still checks the broadcast and
// checksum of device weights and the device buckets.
TEST(DataParallel, GpuModelOverNcclMatchesOneCpuProcess) {
  const ProcessInfo info = process_info();
  if (!nccl_built() || cuda_device_count() < info.local_world) GTEST_SKIP() << "needs NCCL and a GPU per rank";
  const Device gpu = Device::cuda(info.local_rank);
  auto both = device_aware_group(world(), nccl_group(world(), gpu));
  const int r = both->rank(), n = both->size();
  const Tensor tokens = global_tokens();
  auto reference = tiny_model(100);
  loss_of(*reference, tokens).backward();
  const auto want = grads_of(*reference);
  auto model = tiny_model(100 + static_cast<uint64_t>(r));  // rank 0's weights arrive by broadcast
  model->to(gpu);
  broadcast_parameters(*model, *both);
  DataParallel dp(*model, both, {.bucket_bytes = 2048});
  const int64_t rows = 8 / n;
  loss_of(*model, tokens.narrow(0, r * rows, rows).to(gpu)).backward();
  dp.synchronize_gradients();
  const auto params = model->parameters();
  for (size_t i = 0; i < want.size(); ++i) {
    const std::vector<float> got = params[i].grad().to(Device::cpu()).to(DType::f32).to_vector<float>();
    for (size_t j = 0; j < want[i].size(); ++j)
      ASSERT_NEAR(got[j], want[i][j], 1e-4 * (1 + std::fabs(want[i][j]))) << "parameter " << i << " element " << j;
  }
}

TEST(DataParallel, TreeAccumulationIsBitwiseIndependentOfTheRankCount) {
  const int r = world()->rank(), n = world()->size();
  const Tensor tokens = global_tokens();
  // Eight micro-batches of one sequence. Reference: all eight in one process, a tree over 8 leaves.
  auto reference = tiny_model(2);
  TreeGradientAccumulator ref_tree(reference->parameters());
  for (int64_t m = 0; m < 8; ++m) {
    loss_of(*reference, tokens.narrow(0, m, 1)).backward();
    ref_tree.add();
  }
  auto solo = local_group();
  ref_tree.finish(*solo, 1.0 / 8);
  const auto want = grads_of(*reference);
  // This rank's 8 / n consecutive micro-batches, then the tree across ranks.
  auto model = tiny_model(2);
  TreeGradientAccumulator tree(model->parameters());
  const int64_t per_rank = 8 / n;
  for (int64_t m = 0; m < per_rank; ++m) {
    loss_of(*model, tokens.narrow(0, r * per_rank + m, 1)).backward();
    tree.add();
  }
  tree.finish(*world(), 1.0 / 8);
  EXPECT_EQ(grads_of(*model), want);
}

TSU_MPI_TEST_MAIN

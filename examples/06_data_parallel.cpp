// Lesson 6: data parallelism by hand, then with the library.
//
// Run it with two processes:   mpirun -np 2 build/examples/06_data_parallel
// (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; add --oversubscribe on a
// machine with fewer cores than processes).
//
// Every rank holds the same model and takes its own half of the batch. After the backward pass,
// each rank has the gradient of its half; averaging the gradients over the ranks gives the
// gradient of the whole batch, and every rank then takes the same optimizer step. First we
// average by hand with the process group's all_reduce, then the DataParallel wrapper does it,
// in buckets that travel while the backward pass is still running. Both give the same weights.
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/tsumugi.h>

#include <cmath>
#include <cstdio>

using namespace tsumugi;

namespace {

std::shared_ptr<CausalLM> fresh_model() {
  ModelConfig config{.arch = Arch::gpt2, .layers = 2, .heads = 2, .dim = 32, .vocab = 50, .context = 16};
  auto model = make_model(config);
  model->init_weights(/*seed=*/0);  // the same seed on every rank: the same start
  return model;
}

// This rank's rows of a global batch of 8 sequences.
std::pair<Tensor, Tensor> my_rows(int rank, int world) {
  Generator gen(11);
  const Tensor tokens = randint(0, 50, {8, 17}, gen);  // every rank draws the same global batch
  const Tensor mine = tokens.narrow(0, rank * 8 / world, 8 / world);
  return {mine.narrow(1, 0, 16).contiguous(), mine.narrow(1, 1, 16).contiguous().view({-1})};
}

Tensor loss_of(CausalLM& model, const std::pair<Tensor, Tensor>& rows) {
  return cross_entropy(model.forward(rows.first).view({-1, 50}), rows.second);
}

}  // namespace

int main() {
  const std::shared_ptr<ProcessGroup> world = default_group();
  const int rank = world->rank(), size = world->size();
  const auto rows = my_rows(rank, size);
  if (rank == 0) std::printf("%d ranks, each with %lld of the 8 sequences\n", size, static_cast<long long>(rows.first.size(0)));

  // 1. By hand: backward, then all_reduce each gradient (a sum) and divide by the rank count.
  auto by_hand = fresh_model();
  AdamW opt1(by_hand->named_parameters(), {.lr = 1e-2});
  Tensor loss1 = loss_of(*by_hand, rows);
  loss1.backward();
  for (const Tensor& p : by_hand->parameters()) {
    Tensor g = p.grad().contiguous();
    world->all_reduce(g);                   // sum over the ranks, in place
    p.set_grad(g * (1.0 / size));           // mean
  }
  opt1.step();

  // 2. With the library: DataParallel hooks every parameter; gradients are averaged in buckets
  //    that start their all-reduce during the backward pass.
  auto wrapped = fresh_model();
  broadcast_parameters(*wrapped, *world);  // rank 0's weights everywhere, checked by a checksum
  DataParallel dp(*wrapped, world, {.bucket_bytes = 16 << 10});
  AdamW opt2(wrapped->named_parameters(), {.lr = 1e-2});
  Tensor loss2 = loss_of(*wrapped, rows);
  loss2.backward();
  dp.synchronize_gradients();
  opt2.step();

  // 3. Compare the weights after one step.
  double largest = 0;
  const StateDict a = by_hand->state_dict(), b = wrapped->state_dict();
  for (const auto& [name, t] : a) {
    const auto x = t.to_vector<float>(), y = b.at(name).to_vector<float>();
    for (size_t i = 0; i < x.size(); ++i) largest = std::max(largest, static_cast<double>(std::fabs(x[i] - y[i])));
  }
  const DataParallel::Stats stats = dp.stats();
  std::printf("rank %d: local loss %.4f; %lld buckets, %.1f KB all-reduced; largest weight difference %.3g (%s)\n",
              rank, loss1.item<float>(), static_cast<long long>(stats.buckets), stats.bytes / 1e3, largest,
              largest == 0 ? "identical" : "different");
  shutdown_distributed();
  return largest == 0 ? 0 : 1;
}

// Lesson 7: pipeline parallelism, GPipe and 1F1B.
//
// Run it with two processes:   mpirun -np 2 build/examples/07_pipeline
// (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; add --oversubscribe on a
// machine with fewer cores than processes).
//
// A model too large for one device is cut into stages: here rank 0 runs the embedding and the
// first two blocks, rank 1 the last two blocks, the final norm, the head and the loss. The batch
// is split into micro-batches; rank 0 sends each micro-batch's activations to rank 1, and rank 1
// sends the gradient of those activations back. While rank 1 works on micro-batch 0, rank 0 can
// already run micro-batch 1: that overlap is what makes a pipeline faster than taking turns.
//
// GPipe runs every forward pass, then every backward pass. 1F1B starts backward passes as soon
// as it can, so the first stage never holds more than (number of stages) micro-batches of
// activations. Both compute the same gradients; the timelines printed below show where each
// stage waits (the "bubble").
#include <tsumugi/dist/pipeline_stage.h>
#include <tsumugi/tsumugi.h>

#include <cmath>
#include <cstdio>
#include <string>

using namespace tsumugi;

namespace {

constexpr int64_t kVocab = 64, kLength = 32, kMicro = 2, kMicroBatches = 4;

// One text line per stage: each forward pass is drawn with its micro-batch number (0, 1, ...),
// each backward pass with a letter (a for micro-batch 0, b for 1, ...), waiting with dots.
std::string timeline(const std::vector<PipelineSpan>& spans, double end_us, int width = 72) {
  std::string line(static_cast<size_t>(width), '.');
  int drawn = 0;  // every pass gets at least one column, even a short one
  for (const PipelineSpan& s : spans) {
    if (s.category != "forward" && s.category != "backward") continue;
    const int m = std::stoi(s.name.substr(1));
    const char mark = static_cast<char>(s.category == "forward" ? '0' + m : 'a' + m);
    const int from = std::max(drawn, static_cast<int>(s.start_us / end_us * width));
    const int to = std::max(from + 1, static_cast<int>((s.start_us + s.duration_us) / end_us * width));
    for (int i = from; i < std::min(to, width); ++i) line[static_cast<size_t>(i)] = mark;
    drawn = to;
  }
  return line;
}

}  // namespace

int main() {
  const std::shared_ptr<ProcessGroup> world = default_group();
  const int rank = world->rank();
  if (world->size() != 2) {
    if (rank == 0) std::printf("run me with two processes: mpirun -np 2 %s\n", "07_pipeline");
    shutdown_distributed();
    return world->size() == 1 ? 0 : 1;
  }
  Generator gen(7);
  const Tensor tokens = randint(0, kVocab, {kMicro * kMicroBatches, kLength + 1}, gen);  // the same on both ranks
  const Tensor inputs = tokens.narrow(1, 0, kLength).contiguous(), targets = tokens.narrow(1, 1, kLength).contiguous();

  std::vector<std::vector<double>> losses;  // per schedule, the mean loss of each step
  for (PipelineScheduleKind schedule : {PipelineScheduleKind::gpipe, PipelineScheduleKind::one_f_one_b}) {
    // Both ranks build the whole model from the same seed; each trains only its stage and lets
    // go of the other stage's weights.
    auto model = make_model({.arch = Arch::gpt2, .layers = 4, .heads = 4, .dim = 128, .vocab = kVocab, .context = kLength});
    model->init_weights(0);
    const int64_t whole = model->num_parameters();
    PipelineStage stage(*model, world, {.schedule = schedule, .stage_starts = {0, 2}});
    stage.release_other_weights();
    if (schedule == PipelineScheduleKind::gpipe)
      for (int r = 0; r < 2; ++r) {
        world->barrier();
        if (r == rank)
          std::printf("stage %d holds %lld of the model's %lld weights\n", rank,
                      static_cast<long long>(stage.held_parameters()), static_cast<long long>(whole));
        std::fflush(stdout);
      }
    AdamW optimizer(stage.parameters(), {.lr = 1e-3});

    losses.emplace_back();
    for (int step = 0; step < 3; ++step) {  // the last step is drawn (the first ones warm up)
      world->barrier();
      const double start = steady_microseconds();
      stage.spans().clear();
      stage.start_trace(start);
      const double loss_sum = stage.run(inputs, targets, kMicro, 1.0 / kMicroBatches, /*z_loss=*/0.0);
      stage.finish_tied_gradients();  // the token embedding is also the head: sum its two gradients
      optimizer.step();
      optimizer.zero_grad();
      stage.stop_trace();
      const double end = steady_microseconds() - start;
      losses.back().push_back(loss_sum / kMicroBatches);
      if (step < 2) continue;
      for (int r = 0; r < 2; ++r) {  // rank 0 prints first, then rank 1
        world->barrier();
        if (r != rank) continue;
        if (rank == 0)
          std::printf("\n%s, %lld micro-batches (digits: forward of micro-batch m, letters: its backward, dots: waiting)\n",
                      schedule == PipelineScheduleKind::gpipe ? "GPipe" : "1F1B", static_cast<long long>(kMicroBatches));
        std::printf("stage %d |%s| idle %2.0f%%, %lld micro-batches held at once", rank,
                    timeline(stage.spans(), end).c_str(), 100 * stage.last_step().idle_fraction(),
                    static_cast<long long>(stage.last_step().peak_micro_batches));
        if (rank == 1) std::printf(", mean loss %.4f", loss_sum / kMicroBatches);
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  }
  // The same model trained the same way, whatever the schedule: the same losses. (The two add the
  // micro-batches' gradients in another order, so the last bits may differ; the trainer's
  // deterministic mode makes them identical.)
  if (rank == 0) {
    double largest = 0;
    for (size_t i = 0; i < losses[0].size(); ++i)
      largest = std::max(largest, std::fabs(losses[0][i] - losses[1][i]) / losses[0][i]);
    std::printf("\nlosses of the 3 steps, GPipe: %.6f %.6f %.6f; 1F1B: %.6f %.6f %.6f (%s)\n", losses[0][0],
                losses[0][1], losses[0][2], losses[1][0], losses[1][1], losses[1][2],
                largest < 1e-5 ? "the same losses" : "DIFFERENT");
    std::printf("ideal idle share of 2 stages and %lld micro-batches: (P-1)/(M+P-1) = %.0f%%\n",
                static_cast<long long>(kMicroBatches), 100 * ideal_bubble_fraction(2, kMicroBatches));
  }
  shutdown_distributed();
  return 0;
}

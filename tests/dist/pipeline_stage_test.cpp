// Pipeline stages over real MPI ranks (np 2 and 4): every stage's gradients, the loss and the
// gradient norm against one process computing the whole model, GPipe and 1F1B, tied and untied
// embeddings, alone and in a data x pipeline mesh. Every rank computes the one-process reference
// itself (it holds the whole model), so no files are needed.
//
// Deterministic mode must give the same bits as one process; the default mode sums the
// micro-batches in another order and agrees to rounding.
#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/dist/data_parallel.h>
#include <tsumugi/dist/pipeline_stage.h>

#include <fmt/format.h>

#include <cmath>
#include <set>

#include "mpi_main.h"

using namespace tsumugi;

namespace {

std::shared_ptr<ProcessGroup> world() {
  static auto group = default_group();
  return group;
}

constexpr int64_t kVocab = 37, kLength = 8, kMicro = 2;

ModelConfig config(Arch arch) {
  // Tied GPT-2 (the embedding is also the last stage's head); untied Llama with grouped queries.
  if (arch == Arch::gpt2)
    return {.arch = Arch::gpt2, .layers = 4, .heads = 2, .dim = 16, .vocab = kVocab, .context = kLength};
  return {.arch = Arch::llama, .layers = 4, .heads = 2, .kv_heads = 1, .dim = 16, .vocab = kVocab,
          .context = kLength, .tied_embeddings = false};
}

std::shared_ptr<CausalLM> model_of(Arch arch) {
  auto model = make_model(config(arch));
  model->init_weights(3);
  return model;
}

// `rows` sequences of kLength + 1 tokens.
Tensor tokens(int64_t rows) {
  Generator gen(11);
  return randint(0, kVocab, {rows, kLength + 1}, gen);
}
Tensor inputs_of(const Tensor& t) { return t.narrow(1, 0, kLength).contiguous(); }
Tensor targets_of(const Tensor& t) { return t.narrow(1, 1, kLength).contiguous(); }

struct Reference {
  std::shared_ptr<CausalLM> model;
  double loss_sum = 0;
  double norm = 0;
};

// One process over all rows, as the trainer's GradientStep does it: each micro-batch's gradient
// a tree leaf (deterministic), or the mean over micro-batches accumulated by autograd.
Reference one_process(Arch arch, const Tensor& rows, bool deterministic) {
  Reference r{model_of(arch)};
  const int64_t micro_batches = rows.size(0) / kMicro;
  TreeGradientAccumulator tree(r.model->parameters());
  for (int64_t m = 0; m < micro_batches; ++m) {
    const Tensor part = rows.narrow(0, m * kMicro, kMicro);
    const Tensor loss =
        cross_entropy(r.model->forward(inputs_of(part)).view({-1, kVocab}), targets_of(part).view({-1}));
    r.loss_sum += loss.item<float>();
    if (deterministic) {
      loss.backward();
      tree.add();
    } else {
      (loss * (1.0 / static_cast<double>(micro_batches))).backward();
    }
  }
  auto single = local_group();
  if (deterministic) tree.finish(*single, 1.0 / static_cast<double>(micro_batches));
  r.norm = grad_norm(r.model->parameters());
  return r;
}

struct Case {
  Arch arch;
  PipelineScheduleKind schedule;
  bool deterministic;
  bool grouped;  // PipelineOptions::grouped_transport: blocking send_recv batches, as over NCCL
};

std::string name_of(const Case& c) {
  return fmt::format("{} {} {} {}", arch_name(c.arch), c.schedule == PipelineScheduleKind::gpipe ? "gpipe" : "1f1b",
                     c.deterministic ? "deterministic" : "default", c.grouped ? "grouped" : "asynchronous");
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (Arch arch : {Arch::gpt2, Arch::llama})
    for (PipelineScheduleKind s : {PipelineScheduleKind::gpipe, PipelineScheduleKind::one_f_one_b})
      for (bool d : {false, true})
        for (bool grouped : {false, true}) all.push_back({arch, s, d, grouped});
  return all;
}

// Runs one step of `rows` on a dp x pp mesh (world rank = d * pp + s) and compares this stage's
// gradients, the loss and the norm with one process.
void check_mesh(const Case& c, int pp) {
  const int n = world()->size(), r = world()->rank();
  ASSERT_EQ(n % pp, 0);
  const int dp = n / pp;
  auto pipeline = world()->split(r / pp, r % pp);
  auto replicas = world()->split(r % pp, r / pp);
  const Tensor all_rows = tokens(8);  // 4 micro-batches of 2 in all
  const Reference want = one_process(c.arch, all_rows, c.deterministic);

  auto model = model_of(c.arch);
  PipelineStage stage(*model, pipeline,
                      {.schedule = c.schedule, .stage_starts = {}, .per_micro_batch_tied_sum = c.deterministic,
                       .grouped_transport = c.grouped});
  const int64_t rows_per_replica = all_rows.size(0) / dp, local_micro_batches = rows_per_replica / kMicro;
  const Tensor rows = all_rows.narrow(0, replicas->rank() * rows_per_replica, rows_per_replica);
  std::vector<Tensor> tree_params;
  for (const auto& [name, p] : stage.parameters())
    if (!stage.is_tied_copy(name)) tree_params.push_back(p);
  TreeGradientAccumulator tree(tree_params);
  std::unique_ptr<DataParallel> data_parallel;
  if (!c.deterministic && dp > 1) data_parallel = std::make_unique<DataParallel>(stage.parameters(), replicas);
  PipelineStage::BackwardHook before, after;
  if (data_parallel) before = [&](int64_t, bool last) { data_parallel->set_gradient_sync(last); };
  if (c.deterministic) after = [&](int64_t, bool) { tree.add(); };
  const double weight = c.deterministic ? 1.0 : 1.0 / static_cast<double>(local_micro_batches);
  double loss_sum = stage.run(inputs_of(rows), targets_of(rows), kMicro, weight, 0.0, before, after);
  if (c.deterministic) tree.finish(*replicas, 1.0 / static_cast<double>(local_micro_batches * dp));
  else if (data_parallel) data_parallel->synchronize_gradients();
  stage.finish_tied_gradients();
  Tensor total = from_data<double>({loss_sum});
  if (c.deterministic) replicas->all_reduce_tree(total);
  else replicas->all_reduce(total);
  loss_sum = total.item<double>();

  StateDict reference;  // the parameters themselves (state_dict's tensors carry no gradient)
  for (const auto& [name, p] : want.model->named_parameters()) reference[name] = p;
  for (const auto& [name, p] : stage.parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    const std::vector<float> got = p.grad().to_vector<float>(), expected = reference.at(name).grad().to_vector<float>();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      if (c.deterministic) {
        ASSERT_EQ(got[i], expected[i]) << name << "[" << i << "] stage " << stage.stage();
      } else {
        ASSERT_NEAR(got[i], expected[i], 1e-6 * (1 + std::fabs(expected[i]))) << name << "[" << i << "]";
      }
    }
  }
  const double norm = stage.gradient_norm();
  if (c.deterministic) {
    EXPECT_EQ(loss_sum, want.loss_sum);
    EXPECT_EQ(norm, want.norm);
  } else {
    EXPECT_NEAR(loss_sum, want.loss_sum, 1e-6 * want.loss_sum);
    EXPECT_NEAR(norm, want.norm, 1e-6 * want.norm);
  }
  // 1F1B's first stage holds at most min(P, M) micro-batches; GPipe all of them.
  if (stage.is_first()) {
    const int64_t bound = c.schedule == PipelineScheduleKind::gpipe ? local_micro_batches
                                                                    : std::min<int64_t>(pp, local_micro_batches);
    EXPECT_EQ(stage.last_step().peak_micro_batches, bound);
  }
  // Idle shares are of the pipeline's step, which every stage agrees on: its longest stage's.
  const PipelineStepStats& s = stage.last_step();
  Tensor spans = from_data<double>({s.makespan_seconds, -s.makespan_seconds});
  pipeline->all_reduce(spans, ReduceOp::max);
  EXPECT_EQ(spans.data<double>()[0], -spans.data<double>()[1]) << "the stages disagree on the pipeline's step";
  Tensor longest = from_data<double>({s.step_seconds});
  pipeline->all_reduce(longest, ReduceOp::max);
  EXPECT_EQ(s.makespan_seconds, longest.item<double>());
  EXPECT_GT(s.compute_seconds, 0.0);
  EXPECT_GT(s.idle_fraction(), 0.0);  // every stage of a pipeline waits at the start or the end
  EXPECT_LT(s.idle_fraction(), 1.0);
}

}  // namespace

TEST(PipelineStage, EveryStageMatchesOneProcess) {
  const int n = world()->size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  for (const Case& c : cases()) {
    SCOPED_TRACE(name_of(c) + " pp=" + std::to_string(n));
    check_mesh(c, n);
  }
}

TEST(PipelineStage, DataTimesPipelineMeshMatchesOneProcess) {
  if (world()->size() != 4) GTEST_SKIP() << "needs 4 ranks (2 x 2)";
  for (const Case& c : cases()) {
    SCOPED_TRACE(name_of(c) + " dp=2 pp=2");
    check_mesh(c, 2);
  }
}

TEST(PipelineStage, ParametersAreCutByOwnerAndTheTiedEmbeddingIsOnBothEnds) {
  const int n = world()->size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  auto model = model_of(Arch::gpt2);
  PipelineStage stage(*model, world(), {.stage_starts = n == 2 ? std::vector<int64_t>{0, 3} : std::vector<int64_t>{0, 1, 2, 3}});
  std::set<std::string> mine;
  for (const auto& [name, p] : stage.parameters()) mine.insert(name);
  EXPECT_EQ(mine.count("transformer.wte.weight"), stage.is_first() || stage.is_last() ? 1u : 0u);
  EXPECT_EQ(mine.count("transformer.wpe.weight"), stage.is_first() ? 1u : 0u);
  EXPECT_EQ(mine.count("transformer.ln_f.weight"), stage.is_last() ? 1u : 0u);
  EXPECT_EQ(stage.owner("transformer.wte.weight"), 0);
  EXPECT_EQ(stage.owner("transformer.ln_f.bias"), n - 1);
  EXPECT_EQ(stage.owner("transformer.h.3.mlp.c_fc.weight"), n - 1);
  EXPECT_EQ(stage.owner("transformer.h.0.attn.c_attn.weight"), 0);
  EXPECT_EQ(stage.is_tied_copy("transformer.wte.weight"), stage.is_last());
}

TEST(PipelineStage, ReleasedStagesHoldOnlyTheirPiecesAndGatherTheWholeModel) {
  const int n = world()->size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  auto model = model_of(Arch::gpt2);
  const int64_t whole = model->num_parameters();
  const StateDict shapes = model_of(Arch::gpt2)->state_dict();
  PipelineStage stage(*model, world());
  // Each stage changes only its own parameters, then lets go of the others.
  {
    NoGradGuard no_grad;
    for (auto [name, p] : stage.parameters()) p.fill_(static_cast<double>(stage.owner(name) + 1));
  }
  const int64_t before = memory_stats().allocated;
  stage.release_other_weights();
  EXPECT_FALSE(stage.holds_whole_model());
  EXPECT_EQ(before - memory_stats().allocated, (whole - stage.held_parameters()) * 4);  // f32 bytes freed
  std::set<std::string> mine;
  for (const auto& [name, p] : stage.parameters()) mine.insert(name);
  int64_t held = 0;
  for (const auto& [name, p] : model->named_parameters()) {
    EXPECT_EQ(p.numel() > 0, mine.count(name) == 1) << name;
    held += p.numel();
  }
  EXPECT_EQ(stage.held_parameters(), held);
  EXPECT_LT(held, whole);
  // The whole model on the last stage (any root works), every parameter from its owner.
  const int root = n - 1;
  const StateDict full = stage.gather_weights(model->state_dict(), root);
  if (stage.stage() != root) {
    EXPECT_TRUE(full.empty());
    return;
  }
  ASSERT_EQ(full.size(), shapes.size());
  for (const auto& [name, t] : full) {
    EXPECT_EQ(t.shape(), shapes.at(name).shape()) << name;
    EXPECT_EQ(t.to_vector<float>().back(), static_cast<float>(stage.owner(name) + 1)) << name;
  }
}

// Forward-only work through released stages gives one process's bits: evaluation sums and
// incremental decoding with a cache (including a restart when the context fills).
TEST(PipelineStage, EvaluationAndDecodingThroughReleasedStagesMatchOneProcess) {
  const int n = world()->size();
  if (n < 2) GTEST_SKIP() << "needs 2 or more ranks";
  for (Arch arch : {Arch::gpt2, Arch::llama}) {
    SCOPED_TRACE(arch == Arch::gpt2 ? "gpt2 tied" : "llama untied");
    auto reference = model_of(arch);
    auto model = model_of(arch);
    PipelineStage stage(*model, world());
    stage.release_other_weights();
    const Tensor rows = tokens(4);
    const double sum = stage.forward_loss_sum(inputs_of(rows), targets_of(rows));
    double want = 0;
    {
      NoGradGuard no_grad;
      reference->eval();
      want = cross_entropy(reference->forward(inputs_of(rows)).view({-1, kVocab}), targets_of(rows).view({-1}))
                 .item<double>() *
             static_cast<double>(targets_of(rows).numel());
    }
    EXPECT_EQ(sum, stage.is_last() ? want : 0.0);
    KVCache cache, reference_cache;
    const std::vector<std::vector<int64_t>> pieces{{3, 1, 4}, {1}, {5}, {9, 2, 6, 5}, {3}, {5, 8}};
    for (const auto& ids : pieces) {
      if (reference_cache.length + static_cast<int64_t>(ids.size()) > kLength) {
        cache = KVCache();
        reference_cache = KVCache();
      }
      const Tensor logits = stage.decode(ids, cache);
      NoGradGuard no_grad;
      const Tensor all = reference->forward(
          from_data<int64_t>(ids, {1, static_cast<int64_t>(ids.size())}, {.dtype = DType::i64}), &reference_cache);
      EXPECT_EQ(cache.length, reference_cache.length);
      if (!stage.is_last()) {
        EXPECT_FALSE(logits.defined());
        continue;
      }
      EXPECT_EQ(logits.to_vector<float>(),
                all.select(0, 0).select(0, static_cast<int64_t>(ids.size()) - 1).to_vector<float>());
    }
  }
}

TEST(PipelineStage, AStageCutThatDoesNotFitIsAnError) {
  if (world()->size() < 2) GTEST_SKIP() << "needs 2 or more ranks";
  auto model = model_of(Arch::llama);
  std::vector<int64_t> bad(static_cast<size_t>(world()->size()), 0);
  EXPECT_THROW(PipelineStage(*model, world(), {.stage_starts = bad}), ValueError);
}

TSU_MPI_TEST_MAIN

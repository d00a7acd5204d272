// The loader: windows, rank slices, resuming on another rank count, validation order.
#include <tsumugi/core/error.h>
#include <tsumugi/data/loader.h>
#include <tsumugi/data/sampler.h>

#include <gtest/gtest.h>

#include <map>

#include "data/data_test_util.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;

// A split whose token stream is 0, 1, 2, ... (mod 8000, skipping 2 except at document ends),
// in several shards, so that windows are easy to check.
class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("tsumugi-loader");
    ShardSetWriter writer(dir_->str(), "train", std::string(64, 'c'), 8000, 2, 1000);
    int32_t next = 3;
    for (int d = 0; d < 400; ++d) {
      std::vector<int32_t> document;
      for (int k = 0; k < 10 + d % 17; ++k) {
        document.push_back(next);
        next = next == 7999 ? 3 : next + 1;
      }
      document.push_back(2);
      writer.add_document(document, document.size());
      stream_.insert(stream_.end(), document.begin(), document.end());
    }
    writer.finish();
    shards_ = std::make_shared<const ShardSet>(ShardSet::open(dir_->str()));
  }
  static void TearDownTestSuite() {
    shards_.reset();
    delete dir_;
  }

  // Global batches [first_step, first_step + steps) read by `world` in-process ranks, each rank's
  // rows concatenated in rank order: what the whole job saw.
  static std::vector<std::vector<int32_t>> global_inputs(int world, int steps, uint64_t samples_consumed,
                                                         int64_t batch = 8, int64_t seq_len = 16) {
    std::vector<std::unique_ptr<DataLoader>> ranks;
    for (int r = 0; r < world; ++r) {
      ranks.push_back(std::make_unique<DataLoader>(
          shards_, LoaderOptions{.seq_len = seq_len, .global_batch = batch, .rank = r, .world = world, .seed = 11,
                                 .samples_consumed = samples_consumed, .prefetch = 2}));
    }
    std::vector<std::vector<int32_t>> steps_seen;
    for (int s = 0; s < steps; ++s) {
      std::vector<int32_t> all;
      for (auto& loader : ranks) {
        const Batch b = loader->next();
        EXPECT_EQ(b.inputs.shape(), (Shape{batch / world, seq_len}));
        const auto values = b.inputs.to_vector<int32_t>();
        all.insert(all.end(), values.begin(), values.end());
      }
      steps_seen.push_back(all);
    }
    return steps_seen;
  }

  static ScratchDir* dir_;
  static std::vector<int32_t> stream_;
  static std::shared_ptr<const ShardSet> shards_;
};
ScratchDir* LoaderTest::dir_ = nullptr;
std::vector<int32_t> LoaderTest::stream_;
std::shared_ptr<const ShardSet> LoaderTest::shards_;

TEST_F(LoaderTest, BatchesAreInt32WindowsWithTargetsShiftedByOne) {
  DataLoader loader(shards_, {.seq_len = 16, .global_batch = 4, .seed = 3});
  const uint64_t windows = (stream_.size() - 1) / 16;
  EXPECT_EQ(loader.windows_per_epoch(), windows);
  const WindowSampler sampler(windows, 3);
  for (int step = 0; step < 3; ++step) {
    const Batch batch = loader.next();
    EXPECT_EQ(batch.inputs.dtype(), DType::i32);
    EXPECT_EQ(batch.targets.dtype(), DType::i32);
    EXPECT_EQ(batch.inputs.shape(), (Shape{4, 16}));
    const auto inputs = batch.inputs.to_vector<int32_t>();
    const auto targets = batch.targets.to_vector<int32_t>();
    for (int row = 0; row < 4; ++row) {
      const uint64_t start = sampler.window(static_cast<uint64_t>(step * 4 + row)) * 16;
      for (int t = 0; t < 16; ++t) {
        EXPECT_EQ(inputs[row * 16 + t], stream_[start + t]);
        EXPECT_EQ(targets[row * 16 + t], stream_[start + t + 1]);
      }
    }
  }
  EXPECT_EQ(loader.state().samples_consumed, 12u);
  EXPECT_EQ(loader.state().seed, 3u);
}

TEST_F(LoaderTest, EveryWindowOnceInEachEpoch) {
  const uint64_t windows = (stream_.size() - 1) / 16;
  DataLoader loader(shards_, {.seq_len = 16, .global_batch = 1, .seed = 5});
  std::map<int32_t, int> first_tokens;  // the first token identifies the window in this stream
  for (uint64_t i = 0; i < windows; ++i) ++first_tokens[loader.next().inputs.to_vector<int32_t>()[0]];
  std::map<int32_t, int> expected;
  for (uint64_t w = 0; w < windows; ++w) ++expected[stream_[w * 16]];
  EXPECT_EQ(first_tokens, expected);
}

TEST_F(LoaderTest, GlobalSequenceIsTheSameOnOneTwoAndFourRanks) {
  const auto one = global_inputs(1, 40, 0);
  EXPECT_EQ(global_inputs(2, 40, 0), one);
  EXPECT_EQ(global_inputs(4, 40, 0), one);
  EXPECT_NE(one[0], one[1]);
}

TEST_F(LoaderTest, ResumingOnAnotherRankCountContinuesTheSameSequence) {
  const auto uninterrupted = global_inputs(1, 200, 0);  // 200 steps of 8 cross an epoch boundary
  uint64_t consumed;
  {
    DataLoader first_run(shards_, {.seq_len = 16, .global_batch = 8, .rank = 1, .world = 2, .seed = 11});
    for (int s = 0; s < 75; ++s) first_run.next();
    consumed = first_run.state().samples_consumed;  // what a checkpoint stores
  }
  EXPECT_EQ(consumed, 600u);
  const auto resumed = global_inputs(4, 125, consumed);
  EXPECT_EQ(std::vector(uninterrupted.begin() + 75, uninterrupted.end()), resumed);
}

TEST_F(LoaderTest, RejectsBatchesThatRanksCannotShare) {
  EXPECT_THROW(DataLoader(shards_, {.seq_len = 16, .global_batch = 6, .rank = 0, .world = 4}), ValueError);
  EXPECT_THROW(DataLoader(shards_, {.seq_len = 16, .global_batch = 8, .rank = 4, .world = 4}), ValueError);
  EXPECT_THROW(DataLoader(shards_, {.seq_len = 1 << 20, .global_batch = 8}), ValueError);
}

TEST_F(LoaderTest, ValidationReadsEveryTargetOnceInOrderAcrossRanks) {
  for (int world : {1, 2, 3}) {
    // Targets by window position, gathered from all ranks.
    std::map<uint64_t, std::vector<int32_t>> by_window;
    for (int rank = 0; rank < world; ++rank) {
      ValidationIterator validation(shards_, 16, 5, rank, world);
      uint64_t previous = 0;
      bool first = true;
      while (auto batch = validation.next()) {
        EXPECT_EQ(batch->targets.dtype(), DType::i32);
        const auto targets = batch->targets.to_vector<int32_t>();
        const int64_t rows = batch->targets.size(0), t = batch->targets.size(1);
        EXPECT_TRUE(first || batch->first_sample > previous);
        first = false;
        previous = batch->first_sample;
        for (int64_t row = 0; row < rows; ++row) {
          const uint64_t window = batch->first_sample + static_cast<uint64_t>(row * world);
          EXPECT_FALSE(by_window.count(window)) << "window read twice";
          by_window[window] = std::vector(targets.begin() + row * t, targets.begin() + (row + 1) * t);
        }
      }
    }
    std::vector<int32_t> all;
    for (const auto& [window, targets] : by_window) all.insert(all.end(), targets.begin(), targets.end());
    EXPECT_EQ(all, std::vector(stream_.begin() + 1, stream_.end())) << world << " ranks";
  }
}

TEST_F(LoaderTest, OpensASplitFolderAndChecksIt) {
  DataLoader loader(dir_->str(), {.seq_len = 32, .global_batch = 2});
  EXPECT_EQ(loader.next().inputs.shape(), (Shape{2, 32}));
  EXPECT_THROW(DataLoader(dir_->str() + "/nowhere", {.seq_len = 32, .global_batch = 2}), IOError);
}

}  // namespace
}  // namespace tsumugi

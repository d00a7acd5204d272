#pragma once
/// Training and validation batches from a split folder of shards (docs/data.md).
/// Windows are `seq_len + 1` consecutive tokens of the concatenated stream, window w starting at
/// token w * seq_len; inputs are its first seq_len tokens, targets its last seq_len.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <tsumugi/core/tensor.h>
#include <tsumugi/data/shard.h>

namespace tsumugi {

/// Settings of a DataLoader.
struct LoaderOptions {
  int64_t seq_len = 1024;         ///< T: tokens per row
  int64_t global_batch = 8;       ///< B: rows per step over all ranks (a multiple of world)
  int rank = 0;                   ///< this process's rank in [0, world)
  int world = 1;                  ///< number of ranks sharing each global batch
  uint64_t seed = 0;              ///< chooses the permutation of every epoch
  uint64_t samples_consumed = 0;  ///< global samples already used (resume point, a multiple of B)
  int prefetch = 4;               ///< batches prepared ahead by the prefetch thread
};

/// The whole state of a DataLoader: enough to resume it on any number of ranks.
struct LoaderState {
  uint64_t seed = 0;
  uint64_t samples_consumed = 0;  ///< global samples in all batches returned so far
};

/// A batch for one rank.
struct Batch {
  Tensor inputs;              ///< (B / world, T) int32 token ids
  Tensor targets;             ///< (B / world, T) int32: inputs shifted left by one token
  uint64_t first_sample = 0;  ///< global index of the global batch's first sample
};

/// Shuffled training batches: sample i is window permutation_{i / W}(i % W) (see sampler.h);
/// rank r takes rows [r * B / R, (r + 1) * B / R) of each global batch. A thread prepares the
/// next batches into a bounded queue.
class DataLoader {
 public:
  /// Opens and checks the shards of `shard_dir` (a split folder, e.g. OUT/train).
  DataLoader(const std::string& shard_dir, LoaderOptions options, const ShardSetOptions& shard_options = {});
  /// Uses shards that are already open.
  DataLoader(std::shared_ptr<const ShardSet> shards, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch for this rank (blocks until the prefetch thread has it).
  Batch next();
  /// (seed, samples consumed) after the last batch returned by next().
  LoaderState state() const;
  /// W: windows in one epoch, (tokens - 1) / seq_len.
  uint64_t windows_per_epoch() const;
  /// Rows per batch on this rank: global_batch / world.
  int64_t local_batch() const;
  /// The shards being read.
  const ShardSet& shards() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Reads the `seq_len + 1` tokens of window `window` (starting at token window * seq_len) into
/// `out`; the building block of both iterators.
void read_window(const ShardSet& shards, uint64_t window, int64_t seq_len, int32_t* out);

/// The validation split read once, in order: rank r of R reads full windows r, r + R, ... in
/// batches of up to `batch` rows; the last, shorter window (the stream's tail) comes alone as a
/// (1, t) batch from rank (full windows % R). Every target token is read exactly once overall.
class ValidationIterator {
 public:
  ValidationIterator(const std::string& shard_dir, int64_t seq_len, int64_t batch, int rank = 0, int world = 1,
                     const ShardSetOptions& shard_options = {});
  ValidationIterator(std::shared_ptr<const ShardSet> shards, int64_t seq_len, int64_t batch, int rank = 0,
                     int world = 1);
  /// The next batch, or nothing when this rank has read all of its windows.
  std::optional<Batch> next();
  /// Starts again from the first window.
  void reset();

 private:
  std::shared_ptr<const ShardSet> shards_;
  int64_t seq_len_, batch_;
  int rank_, world_;
  uint64_t full_windows_ = 0;  // windows of seq_len + 1 tokens
  uint64_t tail_tokens_ = 0;   // targets left after the full windows
  uint64_t next_window_ = 0;   // next full window of this rank
  bool tail_done_ = false;
};

}  // namespace tsumugi

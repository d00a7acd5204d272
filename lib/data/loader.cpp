// DataLoader (shuffled windows, prefetch thread) and ValidationIterator (all windows, in order).
#include <tsumugi/data/loader.h>
#include <tsumugi/data/sampler.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/check.h"

namespace tsumugi {

void read_window(const ShardSet& shards, uint64_t window, int64_t seq_len, int32_t* out) {
  shards.read_tokens(window * static_cast<uint64_t>(seq_len), static_cast<uint64_t>(seq_len) + 1, out);
}

namespace {

// Splits windows of seq_len + 1 tokens (rows × (T + 1)) into inputs and targets (rows × T).
Batch make_batch(const std::vector<int32_t>& windows, int64_t rows, int64_t seq_len, uint64_t first_sample) {
  Batch batch;
  batch.inputs = empty({rows, seq_len}, {.dtype = DType::i32});
  batch.targets = empty({rows, seq_len}, {.dtype = DType::i32});
  batch.first_sample = first_sample;
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t row = 0; row < rows; ++row) {
    const int32_t* window = windows.data() + row * (seq_len + 1);
    std::copy(window, window + seq_len, inputs + row * seq_len);
    std::copy(window + 1, window + seq_len + 1, targets + row * seq_len);
  }
  return batch;
}

}  // namespace

struct DataLoader::Impl {
  std::shared_ptr<const ShardSet> shards;
  LoaderOptions options;
  uint64_t windows = 0;
  int64_t local_batch = 0;
  uint64_t consumed = 0;  // after the last batch returned

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Batch> queue;
  std::exception_ptr failure;
  bool stopping = false;
  std::thread producer;

  // Builds this rank's rows of the global batch starting at global sample `first`.
  Batch build(uint64_t first, const WindowSampler& sampler, std::vector<int32_t>& windows_buffer) const {
    const int64_t seq_len = options.seq_len;
    windows_buffer.resize(static_cast<size_t>(local_batch * (seq_len + 1)));
    const uint64_t row0 = first + static_cast<uint64_t>(options.rank) * local_batch;
    for (int64_t row = 0; row < local_batch; ++row) {
      read_window(*shards, sampler.window(row0 + row), seq_len, windows_buffer.data() + row * (seq_len + 1));
    }
    return make_batch(windows_buffer, local_batch, seq_len, first);
  }

  void produce() {
    try {
      const WindowSampler sampler(windows, options.seed);
      std::vector<int32_t> buffer;
      uint64_t first = options.samples_consumed;
      while (true) {
        Batch batch = build(first, sampler, buffer);
        first += static_cast<uint64_t>(options.global_batch);
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stopping || queue.size() < static_cast<size_t>(options.prefetch); });
        if (stopping) return;
        queue.push_back(std::move(batch));
        changed.notify_all();
      }
    } catch (...) {
      std::lock_guard lock(mutex);
      failure = std::current_exception();
      changed.notify_all();
    }
  }
};

DataLoader::DataLoader(const std::string& shard_dir, LoaderOptions options, const ShardSetOptions& shard_options)
    : DataLoader(std::make_shared<const ShardSet>(ShardSet::open(shard_dir, shard_options)), options) {}

DataLoader::DataLoader(std::shared_ptr<const ShardSet> shards, LoaderOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  TSU_CHECK(options.seq_len >= 1 && options.global_batch >= 1, ValueError,
            "[loader] seq_len {} and global_batch {} must be positive", options.seq_len, options.global_batch);
  TSU_CHECK(options.world >= 1 && options.rank >= 0 && options.rank < options.world, ValueError,
            "[loader] rank {} outside [0, world {})", options.rank, options.world);
  TSU_CHECK(options.global_batch % options.world == 0, ValueError,
            "[loader] global_batch {} is not a multiple of the {} ranks", options.global_batch, options.world);
  TSU_CHECK(options.samples_consumed % static_cast<uint64_t>(options.global_batch) == 0, ValueError,
            "[loader] samples_consumed {} is not a multiple of global_batch {}", options.samples_consumed,
            options.global_batch);
  TSU_CHECK(options.prefetch >= 1, ValueError, "[loader] prefetch {} must be at least 1", options.prefetch);
  const uint64_t tokens = shards->total_tokens();
  TSU_CHECK(tokens > static_cast<uint64_t>(options.seq_len), ValueError,
            "[loader] the shards hold {} tokens, fewer than one window of seq_len + 1 = {}", tokens,
            options.seq_len + 1);
  d.shards = std::move(shards);
  d.options = options;
  d.windows = (tokens - 1) / static_cast<uint64_t>(options.seq_len);
  d.local_batch = options.global_batch / options.world;
  d.consumed = options.samples_consumed;
  d.producer = std::thread([&d] { d.produce(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->changed.notify_all();
  impl_->producer.join();
}

Batch DataLoader::next() {
  Impl& d = *impl_;
  std::unique_lock lock(d.mutex);
  d.changed.wait(lock, [&] { return !d.queue.empty() || d.failure; });
  if (d.queue.empty()) std::rethrow_exception(d.failure);
  Batch batch = std::move(d.queue.front());
  d.queue.pop_front();
  d.consumed = batch.first_sample + static_cast<uint64_t>(d.options.global_batch);
  d.changed.notify_all();
  return batch;
}

LoaderState DataLoader::state() const {
  std::lock_guard lock(impl_->mutex);
  return {impl_->options.seed, impl_->consumed};
}

uint64_t DataLoader::windows_per_epoch() const { return impl_->windows; }
int64_t DataLoader::local_batch() const { return impl_->local_batch; }
const ShardSet& DataLoader::shards() const { return *impl_->shards; }

ValidationIterator::ValidationIterator(const std::string& shard_dir, int64_t seq_len, int64_t batch, int rank,
                                       int world, const ShardSetOptions& shard_options)
    : ValidationIterator(std::make_shared<const ShardSet>(ShardSet::open(shard_dir, shard_options)), seq_len, batch,
                         rank, world) {}

ValidationIterator::ValidationIterator(std::shared_ptr<const ShardSet> shards, int64_t seq_len, int64_t batch,
                                       int rank, int world)
    : shards_(std::move(shards)), seq_len_(seq_len), batch_(batch), rank_(rank), world_(world) {
  TSU_CHECK(seq_len >= 1 && batch >= 1, ValueError, "[validation] seq_len {} and batch {} must be positive", seq_len,
            batch);
  TSU_CHECK(world >= 1 && rank >= 0 && rank < world, ValueError, "[validation] rank {} outside [0, world {})", rank,
            world);
  const uint64_t tokens = shards_->total_tokens();
  const uint64_t targets = tokens > 0 ? tokens - 1 : 0;
  full_windows_ = targets / static_cast<uint64_t>(seq_len);
  tail_tokens_ = targets % static_cast<uint64_t>(seq_len);
  reset();
}

void ValidationIterator::reset() {
  next_window_ = static_cast<uint64_t>(rank_);
  tail_done_ = tail_tokens_ == 0 || full_windows_ % static_cast<uint64_t>(world_) != static_cast<uint64_t>(rank_);
}

std::optional<Batch> ValidationIterator::next() {
  const auto stride = static_cast<uint64_t>(world_);
  if (next_window_ < full_windows_) {
    std::vector<int32_t> windows;
    int64_t rows = 0;
    const uint64_t first = next_window_;
    while (rows < batch_ && next_window_ < full_windows_) {
      windows.resize(static_cast<size_t>((rows + 1) * (seq_len_ + 1)));
      read_window(*shards_, next_window_, seq_len_, windows.data() + rows * (seq_len_ + 1));
      next_window_ += stride;
      ++rows;
    }
    return make_batch(windows, rows, seq_len_, first);
  }
  if (!tail_done_) {
    tail_done_ = true;
    const auto tail = static_cast<int64_t>(tail_tokens_);
    std::vector<int32_t> window(static_cast<size_t>(tail + 1));
    shards_->read_tokens(full_windows_ * static_cast<uint64_t>(seq_len_), window.size(), window.data());
    return make_batch(window, 1, tail, full_windows_);
  }
  return std::nullopt;
}

}  // namespace tsumugi

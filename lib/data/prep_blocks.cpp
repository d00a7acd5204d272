// Prep's block pipeline: one reader thread, N encoder threads, in-order consumption.
#include "prep_blocks.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "core/check.h"

namespace tsumugi::data_internal {

EncodedBlock encode_block(const RawBlock& block, const RecordReader& reader, const Tokenizer& tokenizer,
                          const PrepOptions& options) {
  EncodedBlock out;
  out.index = block.index;
  out.input_position = block.input_position;
  const int32_t eos = tokenizer.eos_id();
  std::string scratch;
  for (const auto& record : block.records) {
    const std::string_view raw(block.data.data() + record.offset, record.size);
    std::string_view text;
    InputProblem problem{reader.files()[record.file], record.line, {}};
    if (!parse_record(raw, reader.format(record.file), options.text_field, record.line, scratch, text, problem.what,
                      problem.line)) {
      out.problems.push_back(std::move(problem));
      if (options.on_invalid == OnInvalid::stop) {
        out.fatal = true;
        return out;
      }
      continue;
    }
    if (text.empty()) continue;
    EncodedSplit& split = is_validation_document(text, options.val_fraction) ? out.val : out.train;
    tokenizer.encode_append(text, split.tokens);
    split.tokens.push_back(eos);
    split.doc_ends.push_back(split.tokens.size());
    split.doc_bytes.push_back(text.size());
    out.text_bytes += text.size();
    ++out.documents;
  }
  return out;
}

void run_block_pipeline(const PrepOptions& options, const Tokenizer& tokenizer, int rank, int world,
                        const std::function<void(EncodedBlock&&)>& consume) {
  const int threads = options.threads > 0 ? options.threads
                                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Blocks in flight (read, being encoded, or waiting for an earlier block) stay below this, so
  // memory stays bounded when one block is slow.
  const uint64_t max_in_flight = static_cast<uint64_t>(threads) * 4;
  RecordReader reader(options.inputs, options.block_bytes);

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::pair<uint64_t, RawBlock>> work;  // (sequence among owned blocks, block)
  std::map<uint64_t, EncodedBlock> done;
  uint64_t owned_blocks = 0, next_to_consume = 0;
  bool reader_finished = false, cancelled = false;
  std::exception_ptr failure;

  auto fail = [&](std::exception_ptr error) {
    std::lock_guard lock(mutex);
    if (!failure) failure = error;
    cancelled = true;
    changed.notify_all();
  };
  std::thread read_thread([&] {
    try {
      RawBlock block;
      while (reader.next_block(block)) {
        if (block.index % static_cast<uint64_t>(world) != static_cast<uint64_t>(rank)) continue;
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return cancelled || owned_blocks < next_to_consume + max_in_flight; });
        if (cancelled) return;
        work.emplace_back(owned_blocks++, std::move(block));
        block = RawBlock{};
        changed.notify_all();
      }
      std::lock_guard lock(mutex);
      reader_finished = true;
      changed.notify_all();
    } catch (...) {
      fail(std::current_exception());
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      try {
        while (true) {
          std::pair<uint64_t, RawBlock> item;
          {
            std::unique_lock lock(mutex);
            changed.wait(lock, [&] { return cancelled || !work.empty() || reader_finished; });
            if (cancelled || work.empty()) return;
            item = std::move(work.front());
            work.pop_front();
          }
          EncodedBlock encoded = encode_block(item.second, reader, tokenizer, options);
          std::lock_guard lock(mutex);
          done.emplace(item.first, std::move(encoded));
          changed.notify_all();
        }
      } catch (...) {
        fail(std::current_exception());
      }
    });
  }
  auto join_all = [&] {
    read_thread.join();
    for (auto& worker : workers) worker.join();
  };
  try {
    while (true) {
      EncodedBlock block;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] {
          return cancelled || done.count(next_to_consume) > 0 || (reader_finished && next_to_consume == owned_blocks);
        });
        if (cancelled) break;
        if (done.count(next_to_consume) == 0) break;  // everything consumed
        block = std::move(done.at(next_to_consume));
        done.erase(next_to_consume);
        ++next_to_consume;
        changed.notify_all();
      }
      consume(std::move(block));
    }
  } catch (...) {
    fail(std::current_exception());
  }
  join_all();
  if (failure) std::rethrow_exception(failure);
}

namespace {

void write_u64(std::FILE* file, uint64_t value) { std::fwrite(&value, sizeof value, 1, file); }
template <class T>
void write_vector(std::FILE* file, const std::vector<T>& values) {
  write_u64(file, values.size());
  if (!values.empty()) std::fwrite(values.data(), sizeof(T), values.size(), file);
}
void write_string(std::FILE* file, const std::string& text) {
  write_u64(file, text.size());
  std::fwrite(text.data(), 1, text.size(), file);
}

bool read_u64(std::FILE* file, uint64_t& value) { return std::fread(&value, sizeof value, 1, file) == 1; }
template <class T>
bool read_vector(std::FILE* file, std::vector<T>& values) {
  uint64_t size = 0;
  if (!read_u64(file, size) || size > (uint64_t(1) << 40)) return false;
  values.resize(size);
  return size == 0 || std::fread(values.data(), sizeof(T), size, file) == size;
}
bool read_string(std::FILE* file, std::string& text) {
  uint64_t size = 0;
  if (!read_u64(file, size) || size > (uint64_t(1) << 32)) return false;
  text.resize(size);
  return size == 0 || std::fread(text.data(), 1, size, file) == size;
}

constexpr uint64_t kBlockMagic = 0x314B4C4255535454ULL;  // "TTSUBLK1"

}  // namespace

void write_block(std::FILE* file, const EncodedBlock& block, const std::string& path) {
  write_u64(file, kBlockMagic);
  write_u64(file, block.index);
  for (const EncodedSplit* split : {&block.train, &block.val}) {
    write_vector(file, split->tokens);
    write_vector(file, split->doc_ends);
    write_vector(file, split->doc_bytes);
  }
  write_u64(file, block.problems.size());
  for (const auto& problem : block.problems) {
    write_string(file, problem.file);
    write_u64(file, problem.line);
    write_string(file, problem.what);
  }
  for (uint64_t value : {uint64_t(block.fatal), block.text_bytes, block.documents, block.input_position}) {
    write_u64(file, value);
  }
  TSU_CHECK(!std::ferror(file), IOError, "[prep] {}: cannot write", path);
}

bool read_block(std::FILE* file, EncodedBlock& block, const std::string& path) {
  uint64_t magic = 0;
  if (!read_u64(file, magic)) return false;
  TSU_CHECK(magic == kBlockMagic, IOError, "[prep] {}: not a prep part file (bad block marker)", path);
  bool ok = read_u64(file, block.index);
  for (EncodedSplit* split : {&block.train, &block.val}) {
    ok = ok && read_vector(file, split->tokens) && read_vector(file, split->doc_ends) &&
         read_vector(file, split->doc_bytes);
  }
  uint64_t problems = 0;
  ok = ok && read_u64(file, problems);
  for (uint64_t i = 0; ok && i < problems; ++i) {
    InputProblem problem;
    ok = read_string(file, problem.file) && read_u64(file, problem.line) && read_string(file, problem.what);
    block.problems.push_back(std::move(problem));
  }
  uint64_t fatal = 0;
  ok = ok && read_u64(file, fatal) && read_u64(file, block.text_bytes) && read_u64(file, block.documents) &&
       read_u64(file, block.input_position);
  block.fatal = fatal != 0;
  TSU_CHECK(ok, IOError, "[prep] {}: truncated part file", path);
  return true;
}

}  // namespace tsumugi::data_internal

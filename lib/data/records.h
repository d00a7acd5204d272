#pragma once
// Internal: raw records (a JSON line, or a blank-line-separated text document) read from plain,
// gzip or zstd files, grouped into blocks that prep hands to its encoder threads.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <tsumugi/data/documents.h>

namespace tsumugi::data_internal {

enum class InputFormat { jsonl, txt };

/// The format of `path` from its name (after removing .gz or .zst); throws ValueError otherwise.
InputFormat input_format_of(const std::string& path);

/// Lines of one file, decompressed on the fly (.gz with zlib, .zst with zstd).
class LineReader {
 public:
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  /// The next line without its '\n'; valid until the next call. False at the end of the file.
  bool next(std::string_view& line);
  /// 1-based number of the line last returned.
  uint64_t line_number() const { return line_number_; }
  /// Bytes of the (compressed) file consumed so far.
  uint64_t file_bytes_read() const { return file_bytes_read_; }

 private:
  struct Decoder;
  bool fill();  // reads more decompressed bytes into buffer_; false at the end
  std::string path_;
  std::FILE* file_ = nullptr;
  std::unique_ptr<Decoder> decoder_;
  std::string buffer_;
  size_t begin_ = 0;  // start of unread data in buffer_
  size_t chunk_;      // bytes the next fill() reads: 64 KiB, doubling up to 1 MiB
  bool eof_ = false;
  uint64_t line_number_ = 0;
  uint64_t file_bytes_read_ = 0;
};

/// One record inside a RawBlock's data.
struct RecordSpan {
  uint64_t offset = 0;  ///< into RawBlock::data
  uint64_t size = 0;
  uint32_t file = 0;    ///< index of the input file
  uint64_t line = 0;    ///< 1-based line where the record starts
};

/// Consecutive records, about `block_bytes` of raw input: prep's unit of parallel work.
struct RawBlock {
  uint64_t index = 0;
  std::string data;
  std::vector<RecordSpan> records;
  uint64_t input_position = 0;  ///< bytes of all input files consumed at the end of this block
};

/// Splits input files into records and blocks. Blocks depend only on the input and block_bytes,
/// never on threads or ranks, so that every rank sees the same numbering.
class RecordReader {
 public:
  RecordReader(std::vector<std::string> files, uint64_t block_bytes);
  /// Fills the next block (records appended, index set); false when the input is exhausted.
  bool next_block(RawBlock& block);
  /// Total bytes of the input files (compressed sizes), for progress.
  uint64_t total_input_bytes() const { return total_bytes_; }
  const std::vector<std::string>& files() const { return files_; }
  InputFormat format(uint32_t file) const { return formats_[file]; }

 private:
  bool next_record(RawBlock& block);
  std::vector<std::string> files_;
  std::vector<InputFormat> formats_;
  uint64_t block_bytes_;
  uint64_t total_bytes_ = 0;
  uint64_t done_bytes_ = 0;  // bytes of fully read files
  size_t current_ = 0;
  std::unique_ptr<LineReader> reader_;
  uint64_t next_index_ = 0;
};

/// Turns a raw record into document text, or fills `problem` and returns false. `text` may point
/// into `raw` (txt) or into `scratch` (jsonl). Empty text is returned as true with empty `text`.
bool parse_record(std::string_view raw, InputFormat format, const std::string& text_field, uint64_t first_line,
                  std::string& scratch, std::string_view& text, std::string& problem_what, uint64_t& problem_line);

}  // namespace tsumugi::data_internal

// Raw records from plain, gzip and zstd files; parsing a record into document text.
#include "records.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "json_field.h"
#include "text_util.h"

namespace tsumugi::data_internal {
namespace {

// Reads start at 64 KiB and double up to 1 MiB, so that the many small files of a corpus (and of
// the fuzzers) do not each zero-fill a 1 MiB buffer.
constexpr size_t kFirstReadChunk = 64 << 10;
constexpr size_t kReadChunk = 1 << 20;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view strip_compression(std::string_view path) {
  if (ends_with(path, ".gz")) return path.substr(0, path.size() - 3);
  if (ends_with(path, ".zst")) return path.substr(0, path.size() - 4);
  return path;
}

}  // namespace

InputFormat input_format_of(const std::string& path) {
  const std::string_view base = strip_compression(path);
  if (ends_with(base, ".jsonl") || ends_with(base, ".json")) return InputFormat::jsonl;
  if (ends_with(base, ".txt")) return InputFormat::txt;
  TSU_FAIL(ValueError, "[input] {}: unknown format (expected .jsonl or .txt, optionally with .gz or .zst)", path);
}

// Decompression state: none (plain), zlib (gzip, possibly several members), or zstd.
struct LineReader::Decoder {
  enum class Kind { plain, gzip, zstd } kind = Kind::plain;
  z_stream zlib{};
  ZSTD_DStream* zstd = nullptr;
  std::string input;           // compressed bytes read from the file
  size_t input_pos = 0;
  bool file_done = false;
  bool output_pending = false;  // the last call filled the output: more may come without input
  bool inside_stream = false;   // a gzip member or zstd frame has begun and not yet ended
  ~Decoder() {
    if (kind == Kind::gzip) inflateEnd(&zlib);
    if (zstd) ZSTD_freeDStream(zstd);
  }
};

LineReader::LineReader(const std::string& path)
    : path_(path), decoder_(std::make_unique<Decoder>()), chunk_(kFirstReadChunk) {
  file_ = std::fopen(path.c_str(), "rb");
  TSU_CHECK(file_ != nullptr, IOError, "[input] {}: cannot open: {}", path, std::strerror(errno));
  if (ends_with(path, ".gz")) {
    decoder_->kind = Decoder::Kind::gzip;
    // 15 + 32: a zlib or gzip header, detected automatically.
    TSU_CHECK(inflateInit2(&decoder_->zlib, 15 + 32) == Z_OK, IOError, "[input] {}: zlib init failed", path);
  } else if (ends_with(path, ".zst")) {
    decoder_->kind = Decoder::Kind::zstd;
    decoder_->zstd = ZSTD_createDStream();
    TSU_CHECK(decoder_->zstd != nullptr, IOError, "[input] {}: zstd init failed", path);
  }
}

LineReader::~LineReader() {
  if (file_) std::fclose(file_);
}

bool LineReader::fill() {
  if (eof_) return false;
  // Drop consumed bytes so that the buffer holds only the unread tail.
  buffer_.erase(0, begin_);
  begin_ = 0;
  Decoder& d = *decoder_;
  const size_t old_size = buffer_.size();
  const size_t chunk = chunk_;
  chunk_ = std::min(2 * chunk_, kReadChunk);
  if (d.kind == Decoder::Kind::plain) {
    buffer_.resize(old_size + chunk);
    const size_t got = std::fread(buffer_.data() + old_size, 1, chunk, file_);
    TSU_CHECK(!std::ferror(file_), IOError, "[input] {}: read error", path_);
    buffer_.resize(old_size + got);
    file_bytes_read_ += got;
    if (got == 0) eof_ = true;
    return got > 0;
  }
  while (buffer_.size() == old_size) {
    if (d.input_pos == d.input.size() && !d.file_done) {
      d.input.resize(chunk);
      const size_t got = std::fread(d.input.data(), 1, chunk, file_);
      TSU_CHECK(!std::ferror(file_), IOError, "[input] {}: read error", path_);
      d.input.resize(got);
      d.input_pos = 0;
      file_bytes_read_ += got;
      if (got == 0) d.file_done = true;
    }
    if (d.input_pos == d.input.size() && !d.output_pending) {
      // The whole file is decoded; a stream cut short is an error, not a short document.
      TSU_CHECK(!d.inside_stream, IOError, "[input] {}: truncated {} data", path_,
                d.kind == Decoder::Kind::gzip ? "gzip" : "zstd");
      eof_ = true;
      return false;
    }
    buffer_.resize(old_size + chunk);
    if (d.kind == Decoder::Kind::gzip) {
      d.zlib.next_in = reinterpret_cast<Bytef*>(d.input.data() + d.input_pos);
      d.zlib.avail_in = static_cast<uInt>(d.input.size() - d.input_pos);
      d.zlib.next_out = reinterpret_cast<Bytef*>(buffer_.data() + old_size);
      d.zlib.avail_out = static_cast<uInt>(chunk);
      const int status = inflate(&d.zlib, Z_NO_FLUSH);
      TSU_CHECK(status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR, IOError,
                "[input] {}: corrupt gzip data ({})", path_, d.zlib.msg ? d.zlib.msg : "inflate failed");
      d.input_pos = d.input.size() - d.zlib.avail_in;
      d.output_pending = d.zlib.avail_out == 0;
      buffer_.resize(old_size + (chunk - d.zlib.avail_out));
      d.inside_stream = status != Z_STREAM_END;
      if (status == Z_STREAM_END) inflateReset(&d.zlib);  // another gzip member may follow
    } else {
      ZSTD_inBuffer in{d.input.data(), d.input.size(), d.input_pos};
      ZSTD_outBuffer out{buffer_.data() + old_size, chunk, 0};
      const size_t status = ZSTD_decompressStream(d.zstd, &out, &in);
      TSU_CHECK(!ZSTD_isError(status), IOError, "[input] {}: corrupt zstd data ({})", path_,
                ZSTD_getErrorName(status));
      d.input_pos = in.pos;
      d.output_pending = out.pos == out.size;
      d.inside_stream = status != 0;
      buffer_.resize(old_size + out.pos);
    }
  }
  return true;
}

bool LineReader::next(std::string_view& line) {
  size_t search_from = begin_;
  while (true) {
    const void* newline = std::memchr(buffer_.data() + search_from, '\n', buffer_.size() - search_from);
    if (newline != nullptr) {
      const size_t end = static_cast<const char*>(newline) - buffer_.data();
      line = std::string_view(buffer_.data() + begin_, end - begin_);
      begin_ = end + 1;
      ++line_number_;
      return true;
    }
    const size_t scanned = buffer_.size() - begin_;
    if (!fill()) {
      if (begin_ == buffer_.size()) return false;
      line = std::string_view(buffer_.data() + begin_, buffer_.size() - begin_);  // last line, no '\n'
      begin_ = buffer_.size();
      ++line_number_;
      return true;
    }
    search_from = begin_ + scanned;  // fill() moved the unread bytes to the front
  }
}

RecordReader::RecordReader(std::vector<std::string> files, uint64_t block_bytes)
    : files_(std::move(files)), block_bytes_(block_bytes) {
  for (const auto& file : files_) {
    formats_.push_back(input_format_of(file));
    std::error_code error;
    const auto size = std::filesystem::file_size(file, error);
    TSU_CHECK(!error, IOError, "[input] {}: cannot read: {}", file, error.message());
    total_bytes_ += size;
  }
}

bool RecordReader::next_record(RawBlock& block) {
  while (current_ < files_.size()) {
    if (!reader_) reader_ = std::make_unique<LineReader>(files_[current_]);
    const auto file = static_cast<uint32_t>(current_);
    std::string_view line;
    if (formats_[current_] == InputFormat::jsonl) {
      while (reader_->next(line)) {
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
        block.records.push_back({block.data.size(), line.size(), file, reader_->line_number()});
        block.data.append(line);
        return true;
      }
    } else {
      // A document is a run of non-blank lines; its text keeps the newlines between them.
      RecordSpan record{block.data.size(), 0, file, 0};
      while (reader_->next(line)) {
        const bool blank = line.empty() || line == "\r";
        if (blank) {
          if (record.line != 0) break;
          continue;
        }
        if (record.line == 0) {
          record.line = reader_->line_number();
        } else {
          block.data.push_back('\n');
        }
        block.data.append(line);
      }
      if (record.line != 0) {
        record.size = block.data.size() - record.offset;
        block.records.push_back(record);
        return true;
      }
    }
    done_bytes_ += reader_->file_bytes_read();
    reader_.reset();
    ++current_;
  }
  return false;
}

bool RecordReader::next_block(RawBlock& block) {
  block.data.clear();
  block.records.clear();
  while (block.data.size() < block_bytes_ && next_record(block)) {
  }
  block.input_position = done_bytes_ + (reader_ ? reader_->file_bytes_read() : 0);
  if (block.records.empty()) return false;
  block.index = next_index_++;
  return true;
}

bool parse_record(std::string_view raw, InputFormat format, const std::string& text_field, uint64_t first_line,
                  std::string& scratch, std::string_view& text, std::string& problem_what, uint64_t& problem_line) {
  const size_t bad = find_invalid_utf8(raw);
  if (bad != std::string_view::npos) {
    // Name the line and the byte within that line.
    const std::string_view before = raw.substr(0, bad);
    const size_t line_start = before.rfind('\n');
    problem_line = first_line + static_cast<uint64_t>(std::count(before.begin(), before.end(), '\n'));
    const size_t column = line_start == std::string_view::npos ? bad : bad - line_start - 1;
    problem_what = "invalid UTF-8 at byte " + std::to_string(column + 1) + " of the line";
    return false;
  }
  if (format == InputFormat::txt) {
    text = raw;
    return true;
  }
  problem_what = extract_json_string_field(raw, text_field, scratch);
  if (!problem_what.empty()) {
    problem_line = first_line;
    return false;
  }
  text = scratch;
  return true;
}

}  // namespace tsumugi::data_internal

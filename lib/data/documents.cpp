// DocumentReader: documents from .jsonl / .txt files (plain, .gz, .zst), one at a time.
#include <tsumugi/data/documents.h>

#include <algorithm>
#include <filesystem>

#include "core/check.h"
#include "records.h"

namespace tsumugi {

using data_internal::RawBlock;
using data_internal::RecordReader;

struct DocumentReader::Impl {
  DocumentReaderOptions options;
  RecordReader records;
  RawBlock block;
  size_t next_record = 0;
  std::string scratch;
  std::vector<InputProblem> problems;
  Impl(std::vector<std::string> files, DocumentReaderOptions opts)
      : options(std::move(opts)), records(std::move(files), 64 * 1024) {}
};

DocumentReader::DocumentReader(std::vector<std::string> files, DocumentReaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(files), std::move(options))) {}
DocumentReader::~DocumentReader() = default;
DocumentReader::DocumentReader(DocumentReader&&) noexcept = default;
DocumentReader& DocumentReader::operator=(DocumentReader&&) noexcept = default;

bool DocumentReader::next(Document& document) {
  Impl& d = *impl_;
  while (true) {
    if (d.next_record == d.block.records.size()) {
      if (!d.records.next_block(d.block)) return false;
      d.next_record = 0;
    }
    const auto& record = d.block.records[d.next_record++];
    const std::string_view raw(d.block.data.data() + record.offset, record.size);
    std::string_view text;
    InputProblem problem{d.records.files()[record.file], record.line, {}};
    if (!data_internal::parse_record(raw, d.records.format(record.file), d.options.text_field, record.line, d.scratch,
                                     text, problem.what, problem.line)) {
      TSU_CHECK(d.options.on_invalid == OnInvalid::skip, IOError, "[input] {} (stopping: on_invalid = stop)",
                problem.message());
      d.problems.push_back(std::move(problem));
      continue;
    }
    if (text.empty()) continue;
    document.text.assign(text);
    document.file = record.file;
    document.line = record.line;
    return true;
  }
}

const std::vector<InputProblem>& DocumentReader::problems() const { return impl_->problems; }
const std::vector<std::string>& DocumentReader::files() const { return impl_->records.files(); }

std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& path : paths) {
    TSU_CHECK(fs::exists(path), IOError, "[input] {}: no such file or folder", path);
    if (!fs::is_directory(path)) {
      files.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().string();
      try {
        data_internal::input_format_of(name);
        found.push_back(name);
      } catch (const ValueError&) {
        // Not a corpus file (a README, a manifest): left out of a folder's expansion.
      }
    }
    std::sort(found.begin(), found.end());
    TSU_CHECK(!found.empty(), IOError, "[input] {}: no .jsonl or .txt files (optionally .gz/.zst) in this folder",
              path);
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

}  // namespace tsumugi
